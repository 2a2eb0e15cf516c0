"""The main window: image pane, predictions, attention controls, gallery, status bar."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
)

from ..core import maps
from ..core.results import ClassificationResult, ImageFailure
from . import render, transfer
from .file_actions import FileActions
from .image_view import ImageView
from .panels import AttentionPanel, PredictionsPanel
from .settings import Settings
from .worker import WorkerThread

OVERLAY_MAX_SIDE = 768  # the overlay raster; the painter scales it smoothly


@dataclass
class Item:
    key: str
    label: str
    display: QImage | None = None
    result: ClassificationResult | None = None
    error: str | None = None
    list_item: QListWidgetItem | None = field(default=None, repr=False)


class MainWindow(FileActions, QMainWindow):
    # generation, model, device
    requestLoad = Signal(int, str, str)
    # generation, key, item (path or PIL image)
    requestClassify = Signal(int, str, object)
    requestMany = Signal(int, list)
    requestCatalog = Signal()
    overlayDrawn = Signal()
    # Emitted on the GUI thread (connect plain functions to these, not to the worker's).
    modelReady = Signal(str)
    errorShown = Signal(str, str)  # what (model or an image key), message

    def __init__(self, settings: Settings, model: str | None = None, device: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.setWindowTitle("ViT Desktop")
        self.setAcceptDrops(True)
        self.resize(1200, 760)
        self.setMinimumSize(QSize(900, 560))
        self.items: dict[str, Item] = {}
        self.current: str | None = None
        self._gen = 0
        self._model_gen = 0
        self._hover_token: int | None = None
        self.model_id: str | None = None
        self.model_ready = False
        self._pasted: dict[str, object] = {}  # key → pasted/dropped image data

        self.view = ImageView()
        self.setCentralWidget(self.view)
        self.predictions = PredictionsPanel()
        self.attention = AttentionPanel()
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(96, 96))
        self.gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.gallery.setMovement(QListWidget.Movement.Static)
        self.gallery.currentItemChanged.connect(self._on_gallery)
        self._docks = {}
        for name, widget, area in (("Predictions", self.predictions, Qt.DockWidgetArea.RightDockWidgetArea),
                                   ("Attention", self.attention, Qt.DockWidgetArea.RightDockWidgetArea),
                                   ("Gallery", self.gallery, Qt.DockWidgetArea.BottomDockWidgetArea)):  # fmt: skip
            dock = QDockWidget(name, self)
            dock.setObjectName(name)
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self._docks[name] = dock

        self.status_model = QLabel("Starting…")
        self.status_device = QLabel("")
        self.status_time = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(200)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self._cancel)
        sb = self.statusBar()
        sb.addWidget(self.status_model, 1)
        sb.addPermanentWidget(self.status_device)
        sb.addPermanentWidget(self.status_time)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)

        self.worker = WorkerThread()
        w = self.worker.worker
        self.requestLoad.connect(w.load_model)
        self.requestClassify.connect(w.classify)
        self.requestMany.connect(w.classify_many)
        self.requestCatalog.connect(w.describe)
        w.modelLoaded.connect(self._on_model_loaded)
        w.resultReady.connect(self._on_result)
        w.failed.connect(self._on_failed)
        w.progress.connect(self._on_progress)
        w.jobFinished.connect(self._on_job_finished)
        w.catalogReady.connect(self._on_catalog)

        self.attention.changed.connect(self.redraw)
        self.view.hoveredPatch.connect(self._on_hover)
        self.view.hoverLeft.connect(self._on_hover_left)
        self._build_menus()
        ov = settings.overlay()
        self.view.set_show_grid(ov["grid"])
        from .panels import ViewSettings

        self.attention.apply(ViewSettings(kind=ov["kind"], fusion=ov["fusion"], discard=ov["discard"],
                                          opacity=ov["opacity"], cmap=ov["cmap"]))  # fmt: skip
        geom, state = settings.window_state()
        if geom is not None:
            self.restoreGeometry(geom)
        if state is not None:
            self.restoreState(state)
        self.device = device or settings.device
        QTimer.singleShot(0, lambda: self.load_model(model or settings.last_model or "demo-shapes"))

    # -- menus --------------------------------------------------------------------------
    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "&Open…", self.open_files, QKeySequence.StandardKey.Open)
        self._action(f, "Open &Folder…", self.open_folder)
        self.recent_menu = f.addMenu("Open &Recent")
        self._fill_recent()
        f.addSeparator()
        self._action(f, "&Export Results…", self.export_results, "Ctrl+E")
        self._action(f, "&Save Overlay…", self.save_overlay, QKeySequence.StandardKey.Save)
        self._action(f, "&Copy Overlay", self.copy_overlay, "Ctrl+Shift+C")
        self._action(f, "&Paste", self.paste, QKeySequence.StandardKey.Paste)
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        from .model_menu import ModelMenus

        self.menus = ModelMenus(mb.addMenu("&Model"), mb.addMenu("&Device"))
        self.menus.modelChosen.connect(self._choose_model)
        self.menus.checkpointRequested.connect(self._choose_checkpoint)
        self.menus.deviceChosen.connect(self._choose_device)
        v = mb.addMenu("&View")
        for dock in self._docks.values():
            v.addAction(dock.toggleViewAction())
        grid = self._action(v, "Patch &Grid", lambda on: self._set_grid(on), "G")
        grid.setCheckable(True)
        grid.setChecked(self.view.show_grid)
        v.addSeparator()
        self._action(v, "Zoom &In", lambda: self.view.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn)
        self._action(v, "Zoom &Out", lambda: self.view.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
        self._action(v, "&Fit", self.view.fit, "Ctrl+0")
        self._action(v, "&Actual Size", self.view.actual_size, "Ctrl+1")
        self._action(v, "F&ull Screen", self._toggle_full_screen, QKeySequence.StandardKey.FullScreen)
        h = mb.addMenu("&Help")
        self._action(h, "&About ViT Desktop", self.about)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.add_paths([p]))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def _set_grid(self, on: bool) -> None:
        self.view.set_show_grid(on)
        self.settings.set_overlay(grid=on)

    def _toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    # -- model -------------------------------------------------------------------------
    def _on_catalog(self, models: list, devices: list) -> None:
        self.menus.fill(models, devices, self.model_id, self.device)

    def _choose_model(self, entry: dict) -> None:
        if not entry.get("downloaded") and not os.environ.get("VIT_DESKTOP_NO_DIALOGS"):
            size = entry.get("file_size_mb") or 0
            answer = QMessageBox.question(
                self, "Download weights",
                f"{entry['display_name']} needs its weights ({size:.0f} MB) from\n{entry.get('url')}.\n\nDownload now?",
            )  # fmt: skip
            if answer != QMessageBox.StandardButton.Yes:
                self.menus.mark_current(self.model_id or "")
                return
        self.load_model(entry["id"])

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load checkpoint", "", "Checkpoints (*.pth *.pt *.safetensors);;All files (*)"
        )
        if path:
            self.load_model(path)

    def _choose_device(self, device: str) -> None:
        self.device = device
        self.settings.device = device
        if self.model_id:
            self.load_model(self.model_id)

    def load_model(self, model: str) -> None:
        self._model_gen = self._next_gen()
        self.worker.worker.bump(self._model_gen)  # queued work for the old model is skipped
        self.model_ready = False
        self.status_model.setText(f"Loading {model}…")
        self.requestLoad.emit(self._model_gen, model, self.device)

    def _on_model_loaded(self, gen: int, model_id: str, name: str, device: str, notice: str) -> None:
        if gen != self._model_gen:
            return
        first = self.model_id is None
        self.model_id, self.model_ready = model_id, True
        self.settings.last_model = model_id
        self.progress.hide()
        self.cancel_button.hide()
        if first:
            self.requestCatalog.emit()
        else:
            self.menus.mark_current(model_id)
        self.modelReady.emit(model_id)
        self.status_model.setText(name)
        self.status_device.setText(device.upper())
        if notice:
            self.statusBar().showMessage(notice, 8000)
        for key in list(self.items):  # what waited for the model, or a new model: all of it
            self._classify(key, self._source_of(key))

    # -- getting images in ---------------------------------------------------------------
    def _next_gen(self) -> int:
        self._gen += 1
        return self._gen

    def _source_of(self, key: str) -> object:
        return key if not key.startswith("pasted:") else self._pasted[key]

    def add_paths(self, paths: list[str]) -> None:
        files = list(transfer.expand(paths))
        for p in files:
            self.settings.add_recent(p)
        self._fill_recent()
        for p in files:
            self._add(p, os.path.basename(p), p)

    def add_image_data(self, image, label: str = "pasted image") -> None:
        key = f"pasted:{len(self._pasted) + 1}"
        self._pasted[key] = image
        self._add(key, label, image)

    def _add(self, key: str, label: str, source: object) -> None:
        if key not in self.items:
            item = Item(key, label)
            item.list_item = QListWidgetItem(label)
            item.list_item.setData(Qt.ItemDataRole.UserRole, key)
            self.gallery.addItem(item.list_item)
            self.items[key] = item
        self.gallery.setCurrentItem(self.items[key].list_item)
        self._classify(key, source)

    def _classify(self, key: str, source: object) -> None:
        if self.model_ready:  # otherwise it runs as soon as the model is loaded
            self.requestClassify.emit(self._gen, key, source)

    # -- results ---------------------------------------------------------------------------
    def _on_result(self, gen: int, key: str, shown) -> None:
        item = self.items.get(key)
        if item is None or gen < self._model_gen:  # from a model that has been replaced
            return
        res = shown.result
        if isinstance(res, ImageFailure):
            self._set_error(item, res.error)
            return
        item.result, item.error = res, None
        if shown.display is not None:
            item.display = render.rgb_to_qimage(shown.display)
        top = res.top1
        item.list_item.setText(f"{item.label}\n{top.label} {top.prob * 100:.0f}%")
        if item.display is not None:
            thumb = item.display.scaled(
                96, 96, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            item.list_item.setIcon(QIcon(QPixmap.fromImage(thumb)))
        self.status_time.setText(f"{res.latency_ms:.0f} ms")
        if key == self.current:
            self._show(item)

    def _set_error(self, item: Item, message: str) -> None:
        item.error = message
        item.list_item.setText(f"{item.label}\n⚠ error")
        item.list_item.setToolTip(message)
        self.statusBar().showMessage(message, 10000)
        if item.key == self.current:
            self._show(item)

    def _on_failed(self, gen: int, what: str, message: str) -> None:
        self.errorShown.emit(what, message)
        if what == "model":
            if gen == self._model_gen:
                self.status_model.setText("No model")
                QMessageBox.warning(self, "Model", message) if not os.environ.get(
                    "VIT_DESKTOP_NO_DIALOGS"
                ) else None
                self.statusBar().showMessage(message, 15000)
            return
        item = self.items.get(what)
        if item is not None:
            self._set_error(item, message)
        else:
            self.statusBar().showMessage(message, 10000)

    def _on_progress(self, gen: int, done: int, total: int, label: str) -> None:
        self.progress.show()
        self.cancel_button.show()
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.progress.setFormat(f"{label} %v/%m")

    def _on_job_finished(self, gen: int, what: str, cancelled: bool) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        if cancelled:
            self.statusBar().showMessage("Cancelled; the results so far are kept", 6000)

    def _cancel(self) -> None:
        self.worker.worker.cancel()

    # -- showing ---------------------------------------------------------------------------
    def _on_gallery(self, cur: QListWidgetItem | None, prev) -> None:
        if cur is None:
            return
        key = cur.data(Qt.ItemDataRole.UserRole)
        self.current = key
        self._show(self.items[key])

    def _show(self, item: Item) -> None:
        if item.display is None and item.result is None:
            self.view.set_image(None)
            self.view.placeholder = item.error or "Classifying…"
            self.view.update()
            self.predictions.set_result(None)
            return
        res = item.result
        same = self.view._image is item.display
        if not same:
            self.view.set_image(item.display, res.geometry.original_size if res else None)
        self.view.set_geometry(res.geometry if res else None)
        self.predictions.set_result(res)
        if res is not None and res.attention is not None:
            self.attention.configure(res.attention.num_layers, res.attention.num_heads)
        self.redraw()

    def current_map(self) -> np.ndarray | None:
        item = self.items.get(self.current or "")
        if item is None or item.result is None or item.result.attention is None:
            return None
        att = item.result.attention
        spec = self.attention.settings().map_spec()
        token = self._hover_token or 0
        return maps.compute(att, spec, token)

    def redraw(self) -> None:
        s = self.attention.settings()
        self.settings.set_overlay(
            kind=s.kind, fusion=s.fusion, discard=s.discard, opacity=s.opacity, cmap=s.cmap
        )
        item = self.items.get(self.current or "")
        grid = self.current_map()
        if grid is None or item is None or item.result is None:
            self.view.set_overlay(None)
            return
        geom = item.result.geometry
        ow, oh = geom.original_size
        scale = min(1.0, OVERLAY_MAX_SIDE / max(ow, oh))
        size = (max(1, round(ow * scale)), max(1, round(oh * scale)))
        rgba = render.overlay_rgba(grid, geom, size, s.cmap, s.opacity)
        self.view.set_overlay(render.rgba_to_qimage(rgba))
        att = item.result.attention
        layer = s.layer if s.layer < att.num_layers else att.num_layers - 1
        self.attention.set_head_images([QPixmap.fromImage(i) for i in render.heads_grid(att, layer, s.cmap)])
        self.overlayDrawn.emit()

    def _on_hover(self, row: int, col: int) -> None:
        item = self.items.get(self.current or "")
        if item is None or item.result is None:
            return
        self._hover_token = 1 + row * item.result.geometry.patch_grid[1] + col
        self.redraw()

    def _on_hover_left(self) -> None:
        if self._hover_token is not None:
            self._hover_token = None
            self.redraw()

    # -- drops and paste -------------------------------------------------------------------
    def paste(self) -> None:
        md = QGuiApplication.clipboard().mimeData()
        self._accept_mime(md)

    def _accept_mime(self, md) -> bool:
        paths, images = transfer.mime_payload(md)
        if paths:
            self.add_paths(paths)
        for img in images:
            self.add_image_data(img)
        return bool(paths or images)

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if transfer.can_accept(event.mimeData()):
            self.statusBar().showMessage("Drop to classify", 2000)
            event.acceptProposedAction()
        else:
            self.statusBar().showMessage("Only image files, folders and image data can be dropped here", 4000)
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802
        if self._accept_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    # -- closing ---------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.set_window_state(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.worker.stop(2000)
        super().closeEvent(event)
