"""The New Classifier dialog's backbone list: the window's model (the default), the demo
model, catalog models whose weights are on disk, and any checkpoint ("Other checkpoint…"
opens a file picker; a file chosen stays in the list)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFileDialog

from ..core.defaults import DEMO_ID
from ..core.text import display, short_name
from . import plain

OTHER = "\0other"  # the "Other checkpoint…" entry


class BackboneChoice(QComboBox):
    def __init__(self, win) -> None:
        super().__init__()
        self.win = win
        self.others: list[str] = []  # checkpoints chosen with "Other checkpoint…"
        self._index = 0  # the entry chosen before "Other checkpoint…" (back to it on Cancel)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(20)
        self.activated.connect(self._chosen)

    def chosen(self) -> str:
        """A catalog id or a model file."""
        data = self.currentData()
        return data if data and data != OTHER else DEMO_ID

    def refresh(self) -> None:
        """The list as the window stands now; the entry chosen stays chosen when it is there."""
        m = self.win.models
        keep = self.currentData()
        self.clear()
        seen = set()

        def add(text: str, data: str, tip: str = "") -> None:
            if data not in seen:
                seen.add(data)
                self.addItem(text, data)
                self.setItemData(self.count() - 1, tip or text, Qt.ItemDataRole.ToolTipRole)

        if m.model_id:
            name = plain.shown(m.model_name or short_name(m.model_id), 60)
            add(f"Current model: {name}", m.model_id, display(m.model_id))
        add("Demo model (shapes)", DEMO_ID)
        for entry in m.catalog.values():
            if entry.get("downloaded"):
                add(entry["display_name"], entry["id"])
        for path in self.others:
            add(short_name(path, 40), path, display(path))
        self.addItem("Other checkpoint…", OTHER)
        index = self.findData(keep) if keep not in (None, OTHER) else -1
        self.setCurrentIndex(max(0, index))
        self._index = self.currentIndex()

    def _chosen(self, index: int) -> None:
        if self.itemData(index) != OTHER:
            self._index = index
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Backbone checkpoint", "", "Checkpoints (*.pth *.pt *.safetensors *.bin);;All files (*)"
        )
        if path:
            self.add(path)
        else:
            self.setCurrentIndex(self._index)

    def add(self, path: str) -> None:
        """A checkpoint file (or model folder) as the backbone, chosen now."""
        if path not in self.others:
            self.others.append(path)
        self.refresh()
        self.setCurrentIndex(self.findData(path))
        self._index = self.currentIndex()
