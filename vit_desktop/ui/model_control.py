"""Which model runs where: loading (latest wins), the start-up fallback to the demo, the
download offer, device and fast-mode choices, and a checkpoint's labels file.

Composed into the window: it talks to the worker through the window's request signals
and tells the window when a model is ready (``window.model_ready_changed``)."""

from __future__ import annotations

import os

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMessageBox

from ..core.defaults import DEFAULT_IMAGENET_ID, DEMO_ID
from .input_size_menu import InputSizeMenu
from .jobs import JobKind
from .model_menu import ModelMenus


def has_labels_sidecar(checkpoint: str) -> bool:
    """Whether NAME.labels.txt / NAME.labels.json sit next to a checkpoint."""
    stem = os.path.splitext(checkpoint)[0]
    return any(
        os.path.exists(c)
        for base in (stem, checkpoint)
        for c in (f"{base}.labels.txt", f"{base}.labels.json")
    )


class ModelControl(QObject):
    fastChanged = Signal(bool, str)  # fast mode on?, why it could not be turned on ("" = fine)

    def __init__(self, window, model: str | None, device: str | None) -> None:
        super().__init__(window)
        self.win = window
        s = window.settings
        self.model_id: str | None = None
        self.model_name = ""
        self.device = device or s.device
        self.labels = ""  # the labels file chosen with the current checkpoint
        self.asked: tuple[str, bool, str] = ("", False, "")  # the last load: model, download allowed, labels
        self.catalog: dict[str, dict] = {}
        # The start-up model: what was asked for, else the last one used, else the default
        # ("": ViT-B/16 when its weights are on disk, else the demo, with an offer bar).
        self.startup = True
        self.offer = not model and not s.last_model and not s.offer_dismissed
        self.first = model or s.last_model or ""
        self.first_download = bool(model)
        mb = window.menuBar()
        self.menus = ModelMenus(mb.addMenu("&Model"), mb.addMenu("&Device"))
        self.menus.modelChosen.connect(self.choose_model)
        self.menus.checkpointRequested.connect(self.choose_checkpoint)
        self.menus.deviceChosen.connect(self.choose_device)
        self.fast_action = QAction("&Fast Mode (lower precision)", window)
        self.fast_action.setCheckable(True)
        self.fast_action.setChecked(s.fast)
        self.fast_action.setShortcut(QKeySequence("Ctrl+Shift+F"))
        self.fast_action.toggled.connect(self._toggle_fast)
        self._add_fast_action()
        self.hub_action = QAction("Open from &Hugging Face…", window)
        self.hub_action.setStatusTip("Download a Vision Transformer from the Hugging Face Hub (ORG/NAME)")
        self.hub_action.triggered.connect(self.choose_hub_model)
        self.hub_dialog = None
        self.menus.model_menu.addAction(self.hub_action)
        self.input_size = InputSizeMenu(self)
        self.input_size.attach(self.menus.model_menu)
        w = window.worker.worker
        w.modelLoaded.connect(self._on_loaded)
        w.catalogReady.connect(self._on_catalog)
        w.fastState.connect(self._on_fast_state)
        window.offer_bar.accepted.connect(self._accept_offer)
        window.offer_bar.dismissed.connect(self._dismiss_offer)
        if s.fast:
            window.requestFast.emit(True)  # queued before the first load: applies to it

    def _add_fast_action(self) -> None:
        self.menus.device_menu.addSeparator()
        self.menus.device_menu.addAction(self.fast_action)

    # -- loading ---------------------------------------------------------------------------
    def start(self) -> None:
        self.load(self.first, allow_download=self.first_download)

    def load(self, model: str, allow_download: bool = False, labels: str = "",
             input_size: tuple[int, int] | None = None) -> None:  # fmt: skip
        """Load in the worker; queued work for the old model is dropped (latest wins).
        ``labels``: a labels file for a checkpoint; ``input_size``: (height, width) to run the
        model at instead of its trained size (Model › Input Size)."""
        win = self.win
        self.asked = (model, allow_download, labels)
        gen = win.session.next_generation()
        win.worker.worker.bump(gen)  # the worker drops the old model's folder runs
        win.status.forget(JobKind.FOLDER, gen)
        self.labels = labels
        win.status.model.setText(f"Loading {model or 'the default model'}…")
        win.requestInputSize.emit(input_size)  # queued before the load: applies to it
        win.requestLoad.emit(gen, model, self.device, allow_download, labels)

    def _on_loaded(self, gen: int, model_id: str, name: str, device: str, notice: str) -> None:
        win = self.win
        if gen != win.session.model_generation:
            return
        self.startup = False
        self.model_id, self.model_name = model_id, name
        win.settings.last_model = model_id
        win.status.model.setText(name)
        win.status.set_device(device, self.fast_action.isChecked())
        if not self.fast_action.toolTip().startswith("Fast mode runs"):
            from ..core.classifier import FAST_MODE_TRADE  # torch is loaded by now (worker)

            self.fast_action.setToolTip(FAST_MODE_TRADE)
            self.fast_action.setStatusTip(FAST_MODE_TRADE)
        if notice:
            win.status.say(notice, 8000)
        if model_id != DEMO_ID:
            win.offer_bar.hide()
        win.model_loaded(model_id)
        # After the images: listing the catalog imports torchvision (over a second).
        win.requestCatalog.emit()  # refreshes the menus' on-disk marks too

    def failed(self, gen: int, message: str) -> None:
        """Loading failed: the worker still has the previous model (or none)."""
        win = self.win
        if gen != win.session.model_generation:
            return
        if self._offer_backbone():
            return
        if self.startup and self.model_id is None:
            self.startup = False
            win.status.say(f"{message}; using the demo model", 15000)
            self.device = "auto"  # the saved device may be the reason (a GPU gone)
            self.load(DEMO_ID)
            return
        if self.model_id is not None:
            win.session.model_ready = True
            win.status.model.setText(self.model_name)
            self.menus.mark_current(self.model_id)
            win.resubmit()  # what the switch interrupted runs again with the model that stays
        else:
            win.status.model.setText("No model")
        if "cancelled" in message.lower():
            win.status.say(message, 8000)
            return
        if not os.environ.get("VIT_DESKTOP_NO_DIALOGS"):
            box = QMessageBox(QMessageBox.Icon.Warning, "Model", message, parent=win)
            box.setTextFormat(win.plain_text)  # file text is never markup
            box.exec()
        win.status.say(message, 15000)

    def _offer_backbone(self) -> bool:
        """A taught classifier whose catalog backbone's weights are not on disk: offer their
        download as for any catalog model; True when the load was asked again with it."""
        model, allowed, labels = self.asked
        if allowed or not model.lower().endswith(".safetensors"):
            return False
        from ..core.teach.saved import missing_backbone  # torch is loaded: the worker just tried

        entry = missing_backbone(model)
        if entry is None:
            return False
        size = f" ({entry.file_size_mb:.0f} MB)" if entry.file_size_mb else ""
        text = (f"{os.path.basename(model)} was taught on {entry.display_name}, whose weights{size} are not "
                f"on disk. Download them from\n{entry.url}?\n\n(Progress and Cancel are in the status bar.)")  # fmt: skip
        if not self.win.ask("Download weights", text):
            return False
        self.load(model, allow_download=True, labels=labels)
        return True

    # -- choices ---------------------------------------------------------------------------
    def _on_catalog(self, models: list, devices: list) -> None:
        self.catalog = {m["id"]: m for m in models}
        self.menus.fill(models, devices, self.model_id, self.device)
        self._add_fast_action()  # fill() cleared the menus
        self.menus.model_menu.addAction(self.hub_action)
        self.input_size.attach(self.menus.model_menu)
        self._maybe_offer()

    def choose_model(self, entry: dict) -> None:
        if not entry.get("downloaded"):
            size = entry.get("file_size_mb") or 0
            text = (f"{entry['display_name']} needs its weights ({size:.0f} MB) from\n{entry.get('url')}.\n\n"
                    "Download now? (Progress and Cancel are in the status bar.)")  # fmt: skip
            if entry.get("warning"):  # a plain-http mirror
                text += f"\n\n{entry['warning'][0].upper()}{entry['warning'][1:]}"
            if not self.win.ask("Download weights", text):
                self.menus.mark_current(self.model_id or "")
                return
        self.load(entry["id"], allow_download=True)

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.win, "Load checkpoint", "", "Checkpoints (*.pth *.pt *.safetensors *.bin);;All files (*)"
        )
        if not path:
            return
        labels = ""
        if not has_labels_sidecar(path):
            labels, _ = QFileDialog.getOpenFileName(
                self.win, f"Labels for {os.path.basename(path)} (optional: Cancel numbers the classes)",
                os.path.dirname(path), "Labels (*.txt *.json);;All files (*)",
            )  # fmt: skip
        self.load(path, labels=labels)

    def choose_hub_model(self) -> None:
        """Model › Open from Hugging Face…: ORG/NAME in a small dialog, then loaded (and
        downloaded: progress and Cancel in the status bar) as ``hf:ORG/NAME``."""
        from .hub_dialog import HubDialog

        if self.hub_dialog is not None:
            self.hub_dialog.raise_()
            return
        last = self.model_id if self.model_id and self.model_id.startswith("hf:") else ""
        self.hub_dialog = dialog = HubDialog(self.win, last)
        dialog.chosen.connect(lambda model: self.load(model, allow_download=True))
        dialog.finished.connect(self._hub_dialog_closed)
        dialog.open()

    def _hub_dialog_closed(self) -> None:
        if self.hub_dialog is not None:
            self.hub_dialog.deleteLater()
            self.hub_dialog = None

    def choose_device(self, device: str) -> None:
        self.device = device
        self.win.settings.device = device
        if self.model_id:
            self.load(self.model_id, labels=self.labels)

    def _toggle_fast(self, on: bool) -> None:
        self.win.settings.fast = on
        self.win.requestFast.emit(on)

    def _on_fast_state(self, on: bool, why: str) -> None:
        win = self.win
        self.fast_action.blockSignals(True)
        self.fast_action.setChecked(on)
        self.fast_action.blockSignals(False)
        if why:
            win.status.say(f"Fast mode is not available here: {why}", 10000)
        win.status.set_device(win.status.device.text().split(" ")[0].lower(), on)
        if win.session.model_ready:  # what is on screen is recomputed with the new precision
            win.session.forget_details()
            win.request_detail(win.session.current)
        self.fastChanged.emit(on, why)

    # -- the download offer ------------------------------------------------------------------
    def _maybe_offer(self) -> None:
        entry = self.catalog.get(DEFAULT_IMAGENET_ID)
        if (self.offer and self.model_id == DEMO_ID and entry is not None
                and not entry.get("downloaded") and not self.win.settings.offer_dismissed):  # fmt: skip
            self.win.offer_bar.offer(entry)

    def _accept_offer(self) -> None:
        self.win.offer_bar.hide()
        self.offer = False
        self.load(DEFAULT_IMAGENET_ID, allow_download=True)

    def _dismiss_offer(self) -> None:
        self.win.offer_bar.hide()
        self.offer = False
        self.win.settings.offer_dismissed = True
