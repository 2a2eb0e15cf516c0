"""The Model and Device menus, filled from plain data the worker sends after start-up."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

GROUP_ORDER = ("Demo", "ImageNet-1k", "SWAG")


def describe(entry: dict) -> str:
    size = entry.get("input_size")
    size = size if isinstance(size, int) else "×".join(map(str, size))
    bits = [f"{entry['params'] / 1e6:.1f}M params", f"{size} px"]
    if entry.get("file_size_mb"):
        bits.append(
            f"{entry['file_size_mb']:.0f} MB"
            if entry["file_size_mb"] >= 10
            else f"{entry['file_size_mb']:.1f} MB"
        )
    if entry.get("acc1") is not None:
        bits.append(f"acc@1 {entry['acc1']:.1f}%")
    mark = "✓ " if entry.get("downloaded") else "↓ "
    return f"{mark}{entry['display_name']} — {', '.join(bits)}"


class ModelMenus(QObject):
    modelChosen = Signal(dict)  # a catalog entry as a dict
    checkpointRequested = Signal()
    deviceChosen = Signal(str)

    def __init__(self, model_menu: QMenu, device_menu: QMenu) -> None:
        super().__init__(model_menu)
        self.model_menu = model_menu
        self.device_menu = device_menu
        self.entries: dict[str, dict] = {}
        self._models = QActionGroup(self)
        self._devices = QActionGroup(self)
        model_menu.setToolTipsVisible(True)
        model_menu.addAction("Loading the catalog…").setEnabled(False)
        device_menu.addAction("Checking devices…").setEnabled(False)

    def fill(self, models: list[dict], devices: list[tuple[str, bool, str]], current_model: str | None,
             current_device: str) -> None:  # fmt: skip
        self.entries = {m["id"]: m for m in models}
        self.model_menu.clear()
        groups: dict[str, list[dict]] = {}
        for m in models:
            groups.setdefault(m.get("group", "Other"), []).append(m)
        order = [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]
        for g in order:
            self.model_menu.addSection(g)
            for m in groups[g]:
                act = QAction(describe(m), self.model_menu)
                act.setCheckable(True)
                act.setChecked(m["id"] == current_model)
                act.setData(m["id"])
                if m.get("note"):  # where the weights come from, how they are checked
                    act.setToolTip(m["note"])
                act.triggered.connect(lambda _=False, e=m: self.modelChosen.emit(e))
                self._models.addAction(act)
                self.model_menu.addAction(act)
        self.model_menu.addSeparator()
        load = self.model_menu.addAction("Load Checkpoint…")
        load.triggered.connect(self.checkpointRequested)

        self.device_menu.clear()
        auto = QAction("Auto", self.device_menu)
        auto.setCheckable(True)
        auto.setChecked(current_device == "auto")
        auto.triggered.connect(lambda: self.deviceChosen.emit("auto"))
        self._devices.addAction(auto)
        self.device_menu.addAction(auto)
        for name, ok, reason in devices:
            act = QAction(f"{name.upper()} — {reason}" if ok else f"{name.upper()} (unavailable: {reason})",
                          self.device_menu)  # fmt: skip
            act.setCheckable(True)
            act.setEnabled(ok)
            act.setChecked(current_device == name)
            act.triggered.connect(lambda _=False, n=name: self.deviceChosen.emit(n))
            self._devices.addAction(act)
            self.device_menu.addAction(act)

    def mark_current(self, model_id: str) -> None:
        for act in self._models.actions():
            act.setChecked(act.data() == model_id)
