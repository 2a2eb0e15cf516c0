"""The main window: image pane, predictions, attention controls, gallery, status bar."""

from __future__ import annotations

import atexit
import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QImage, QKeySequence, QPainter, QPixmap
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
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..core import maps
from ..core.results import ClassificationResult, ImageFailure
from . import help, render, transfer
from .file_actions import FileActions
from .image_view import ImageView
from .offer_bar import OfferBar
from .panels import AttentionPanel, PredictionsPanel, ViewSettings
from .settings import Settings
from .worker import THUMB_SIDE as THUMB
from .worker import WorkerThread

OVERLAY_MAX_SIDE = 768  # the overlay raster; the painter scales it smoothly
KEEP_DETAILED = 8  # images kept in full (display pixels, queries and keys); others are re-run
STILL_RUNNING: list = []  # worker threads that did not stop within 2 s of a close


def printable(text: str) -> str:
    """A file name for the screen: bytes that are not UTF-8 shown as �."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _wait_for_stuck_workers() -> None:
    """At interpreter exit (outside the app, which exits at once): let a worker that was
    busy at close finish, rather than destroy a running thread."""
    for w in STILL_RUNNING:
        w.thread.wait()


@dataclass
class Item:
    key: str
    label: str
    source: object = None  # a path, "url:" + a web link, or image data (PIL)
    display: QImage | None = None
    result: ClassificationResult | None = None
    error: str | None = None
    detailed: bool = False  # full attention and the display image are here
    detail_gen: int = -1  # the model generation a full request was last sent for
    list_item: QListWidgetItem | None = field(default=None, repr=False)


class MainWindow(FileActions, QMainWindow):
    # generation, model ("" = the default), device, whether a download is allowed, labels file
    requestLoad = Signal(int, object, str, bool, object)
    # generation, key, source (path, "url:" + link, or image data), request number
    requestClassify = Signal(int, object, object, int)
    requestMany = Signal(int, object)
    requestCatalog = Signal()
    requestFast = Signal(bool)
    # key, source, (map, geometry), colormap, opacity, destination ("" = clipboard)
    requestOverlay = Signal(object, object, object, str, float, str)
    # Emitted on the GUI thread (connect plain functions to these, not to the worker's).
    overlayDrawn = Signal()
    modelReady = Signal(object)
    errorShown = Signal(object, str)  # what (model or an image key), message
    jobDone = Signal(bool)  # a folder run ended (cancelled?)
    fastChanged = Signal(bool, str)  # fast mode on?, why it could not be turned on ("" = fine)
    overlayExported = Signal(str, str)  # destination ("" = clipboard), error ("" = fine)

    def __init__(self, settings: Settings, model: str | None = None, device: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.setWindowTitle("ViT Desktop")
        self.setAcceptDrops(True)
        self.resize(1200, 760)
        self.setMinimumSize(QSize(800, 500))
        self.items: dict[str, Item] = {}
        self.current: str | None = None
        self._gen = 0
        self._model_gen = 0
        self._detail_seq = 0
        self._pasted = 0
        self._hover_token: int | None = None
        self._detailed_order: list[str] = []  # most recently shown in full last
        self._keys: list[str] = []  # gallery rows' keys (Qt strings cannot hold every file name)
        self.model_id: str | None = None
        self.model_name = ""
        self.model_ready = False
        self._busy: set[str] = set()  # long work under way: download, folder, fetch
        self._catalog: dict[str, dict] = {}
        self._labels = ""  # the labels file chosen with the current checkpoint
        # The start-up model: what was asked for, else the last one used, else the default
        # ("": ViT-B/16 when its weights are on disk, else the demo, with an offer bar).
        self._startup = True
        self._offer = not model and not settings.last_model and not settings.offer_dismissed
        self.ask = self._ask_dialog  # replaced in tests: the person's answer to a question

        self.view = ImageView()
        self.view.stepRequested.connect(self.step_gallery)
        self.offer_bar = OfferBar()
        self.offer_bar.accepted.connect(self._accept_offer)
        self.offer_bar.dismissed.connect(self._dismiss_offer)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.offer_bar)
        lay.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self.predictions = PredictionsPanel()
        self.attention = AttentionPanel()
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(THUMB, THUMB))
        self.gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.gallery.setMovement(QListWidget.Movement.Static)
        self.gallery.setWordWrap(True)
        self.gallery.setGridSize(QSize(THUMB + 40, THUMB + 44))
        self.gallery.setUniformItemSizes(True)
        self.gallery.setMinimumHeight(THUMB + 56)  # one row of thumbnails with their labels
        blank = QPixmap(THUMB, THUMB)
        blank.fill(Qt.GlobalColor.transparent)
        self._blank_icon = QIcon(blank)  # keeps the grid aligned until the thumbnail arrives
        self.gallery.setAccessibleName("Gallery")
        self.gallery.currentItemChanged.connect(self._on_gallery)
        self._docks = {}
        for name, widget, area in (("Predictions", self.predictions, Qt.DockWidgetArea.RightDockWidgetArea),
                                   ("Attention", self.attention, Qt.DockWidgetArea.RightDockWidgetArea),
                                   ("Gallery", self.gallery, Qt.DockWidgetArea.BottomDockWidgetArea)):  # fmt: skip
            dock = QDockWidget(name, self)
            dock.setObjectName(name)
            if widget is self.attention:  # scrolls instead of overlapping on small screens
                scroll = QScrollArea()
                scroll.setWidget(widget)
                scroll.setWidgetResizable(True)
                scroll.setFrameShape(QScrollArea.Shape.NoFrame)
                scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
                scroll.setMinimumWidth(300)
                widget = scroll
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self._docks[name] = dock

        # The right-hand panels run the full height; the gallery sits under the image only.
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.status_model = QLabel("Starting…")
        self.status_device = QLabel("")
        self.status_time = QLabel("")
        self.status_job = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the download or folder run (Esc); results so far are kept")
        self.cancel_button.clicked.connect(self._cancel)
        self.cancel_button.setShortcut(QKeySequence("Esc"))  # only while it is shown
        sb = self.statusBar()
        sb.addWidget(self.status_model, 1)
        for w in (self.status_job, self.progress, self.cancel_button, self.status_device, self.status_time):
            sb.addPermanentWidget(w)
        self._set_busy_widgets()

        self.worker = WorkerThread()
        w = self.worker.worker
        self.requestLoad.connect(w.load_model)
        self.requestClassify.connect(w.classify)
        self.requestMany.connect(w.classify_many)
        self.requestCatalog.connect(w.describe)
        self.requestOverlay.connect(w.render_overlay)
        self.requestFast.connect(w.set_fast)
        w.fastState.connect(self._on_fast_state)
        w.dropped.connect(self._on_dropped)
        w.notice.connect(self._on_notice)
        w.modelLoaded.connect(self._on_model_loaded)
        w.resultReady.connect(self._on_result)
        w.failed.connect(self._on_failed)
        w.progress.connect(self._on_progress)
        w.jobFinished.connect(self._on_job_finished)
        w.catalogReady.connect(self._on_catalog)
        w.overlayRendered.connect(self._on_overlay_rendered)

        self.attention.changed.connect(self.redraw)
        self.view.hoveredPatch.connect(self._on_hover)
        self.view.hoverLeft.connect(self._on_hover_left)
        self._build_menus()
        ov = settings.overlay()
        self.view.set_show_grid(ov["grid"])
        self.attention.apply(ViewSettings(kind=ov["kind"], fusion=ov["fusion"], discard=ov["discard"],
                                          opacity=ov["opacity"], cmap=ov["cmap"]))  # fmt: skip
        geom, state = settings.window_state()
        if geom is not None:
            self.restoreGeometry(geom)
        if state is not None:
            self.restoreState(state)
        self.device = device or settings.device
        if settings.fast:
            self.requestFast.emit(True)  # queued before the first load: applies to it
        first = model or settings.last_model or ""
        QTimer.singleShot(0, lambda: self.load_model(first, allow_download=bool(model)))

    # -- menus --------------------------------------------------------------------------
    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        act = QAction(text, self)
        if isinstance(shortcut, (list, tuple)):
            act.setShortcuts([QKeySequence(k) for k in shortcut])
        elif shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "&Open…", self.open_files, QKeySequence.StandardKey.Open)
        self._action(f, "Open &Folder…", self.open_folder, "Ctrl+Shift+O")
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
        self.fast_action = QAction("&Fast Mode (lower precision)", self)
        self.fast_action.setCheckable(True)
        self.fast_action.setChecked(self.settings.fast)
        self.fast_action.setShortcut(QKeySequence("Ctrl+Shift+F"))
        self.fast_action.toggled.connect(self._toggle_fast)
        self.menus.device_menu.addSeparator()
        self.menus.device_menu.addAction(self.fast_action)
        v = mb.addMenu("&View")
        for dock in self._docks.values():
            v.addAction(dock.toggleViewAction())
        grid = self._action(v, "Patch &Grid", lambda on: self._set_grid(on), "G")
        grid.setCheckable(True)
        grid.setChecked(self.view.show_grid)
        v.addSeparator()
        self._action(v, "Zoom &In", lambda: self.view.zoom_by(1.25), [QKeySequence.StandardKey.ZoomIn, "Ctrl+="])
        self._action(v, "Zoom &Out", lambda: self.view.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
        self._action(v, "&Fit", self.view.fit, "Ctrl+0")
        self._action(v, "&Actual Size (1:1)", self.view.actual_size, "Ctrl+1")
        self._action(v, "F&ull Screen", self._toggle_full_screen, [QKeySequence.StandardKey.FullScreen, "F11"])
        h = mb.addMenu("&Help")
        self._action(h, "&Keyboard Shortcuts", lambda: help.show_shortcuts(self, self.menuBar()), "Ctrl+/")
        self._action(h, "Open &Log Folder", self.open_log_folder)
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

    def _ask_dialog(self, title: str, text: str) -> bool:
        if os.environ.get("VIT_DESKTOP_NO_DIALOGS"):
            return False  # nothing is fetched or downloaded without a person saying yes
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    # -- model -------------------------------------------------------------------------
    def _on_catalog(self, models: list, devices: list) -> None:
        self._catalog = {m["id"]: m for m in models}
        self.menus.fill(models, devices, self.model_id, self.device)
        self.menus.device_menu.addSeparator()
        self.menus.device_menu.addAction(self.fast_action)  # fill() cleared the menu
        self._maybe_offer()

    def _choose_model(self, entry: dict) -> None:
        if not entry.get("downloaded"):
            size = entry.get("file_size_mb") or 0
            text = (f"{entry['display_name']} needs its weights ({size:.0f} MB) from\n{entry.get('url')}.\n\n"
                    "Download now? (Progress and Cancel are in the status bar.)")  # fmt: skip
            if not self.ask("Download weights", text):
                self.menus.mark_current(self.model_id or "")
                return
        self.load_model(entry["id"], allow_download=True)

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load checkpoint", "", "Checkpoints (*.pth *.pt *.safetensors);;All files (*)"
        )
        if not path:
            return
        labels = ""
        if not transfer.has_labels_sidecar(path):
            labels, _ = QFileDialog.getOpenFileName(
                self, f"Labels for {os.path.basename(path)} (optional: Cancel numbers the classes)",
                os.path.dirname(path), "Labels (*.txt *.json);;All files (*)",
            )  # fmt: skip
        self.load_model(path, labels=labels)

    def _choose_device(self, device: str) -> None:
        self.device = device
        self.settings.device = device
        if self.model_id:
            self.load_model(self.model_id, labels=self._labels)

    def _toggle_fast(self, on: bool) -> None:
        self.settings.fast = on
        self.requestFast.emit(on)

    def _on_fast_state(self, on: bool, why: str) -> None:
        self.fast_action.blockSignals(True)
        self.fast_action.setChecked(on)
        self.fast_action.blockSignals(False)
        if why:
            self.statusBar().showMessage(f"Fast mode is not available here: {why}", 10000)
        dev = self.status_device.text().split(" ")[0]
        self.status_device.setText(f"{dev} · fast" if on and dev else dev)
        if self.model_ready:  # what is on screen is recomputed with the new precision
            for item in self.items.values():
                item.detailed, item.detail_gen = False, -1
            if self.current in self.items and self.items[self.current].error is None:
                self._request_detail(self.current)
        self.fastChanged.emit(on, why)

    def load_model(self, model: str, allow_download: bool = False, labels: str = "") -> None:
        """Load in the worker; queued work for the old model is dropped (latest wins).
        ``labels``: a labels file for a checkpoint."""
        self._model_gen = self._next_gen()
        self.worker.worker.bump(self._model_gen)  # the worker drops the old model's folder runs
        self.model_ready = False
        self._done_busy("folder")
        self._labels = labels
        self.status_model.setText(f"Loading {model or 'the default model'}…")
        self.requestLoad.emit(self._model_gen, model, self.device, allow_download, labels)

    def _on_model_loaded(self, gen: int, model_id: str, name: str, device: str, notice: str) -> None:
        if gen != self._model_gen:
            return
        self._startup = False
        self.model_id, self.model_name, self.model_ready = model_id, name, True
        self.settings.last_model = model_id
        self._done_busy("download")
        self.modelReady.emit(model_id)
        self.status_model.setText(name)
        self.status_device.setText(device.upper() + (" · fast" if self.fast_action.isChecked() else ""))
        if not self.fast_action.toolTip().startswith("Fast mode runs"):
            from ..core.classifier import FAST_MODE_TRADE  # torch is loaded by now (worker)

            self.fast_action.setToolTip(FAST_MODE_TRADE)
            self.fast_action.setStatusTip(FAST_MODE_TRADE)
        if notice:
            self.statusBar().showMessage(notice, 8000)
        if model_id != "demo-shapes":
            self.offer_bar.hide()
        for item in self.items.values():  # a new model: everything again
            item.detailed, item.detail_gen = False, -1
        self._submit(list(self.items))
        # After the images: listing the catalog imports torchvision (over a second).
        self.requestCatalog.emit()  # refreshes the menus' on-disk marks too

    def _maybe_offer(self) -> None:
        entry = self._catalog.get("vit-b-16")
        if (self._offer and self.model_id == "demo-shapes" and entry is not None
                and not entry.get("downloaded") and not self.settings.offer_dismissed):  # fmt: skip
            self.offer_bar.offer(entry)

    def _accept_offer(self) -> None:
        self.offer_bar.hide()
        self._offer = False
        self.load_model("vit-b-16", allow_download=True)

    def _dismiss_offer(self) -> None:
        self.offer_bar.hide()
        self._offer = False
        self.settings.offer_dismissed = True

    # -- getting images in ---------------------------------------------------------------
    def _next_gen(self) -> int:
        self._gen += 1
        return self._gen

    def _source_of(self, key: str) -> object:
        return self.items[key].source

    def add_paths(self, paths: list[str]) -> None:
        """Files and folders (walked); many files run as a background job."""
        for p in paths:
            self.settings.add_recent(os.path.abspath(p))
        self._fill_recent()
        files = list(transfer.expand(paths))
        if not files:
            self.statusBar().showMessage("No images found in what was opened", 8000)
            return
        self._add([(p, os.path.basename(p), p) for p in files])

    def add_image_data(self, image, label: str = "pasted image") -> None:
        self._pasted += 1
        self._add([(f"pasted:{self._pasted}", label if self._pasted == 1 else f"{label} {self._pasted}", image)])

    def add_urls(self, urls: list[str]) -> None:
        """Web links are fetched only after the person agrees (size cap, timeout, in the worker)."""
        from ..core.remote import MAX_BYTES, TIMEOUT_S, host_of

        what = urls[0] if len(urls) == 1 else f"{len(urls)} links from {host_of(urls[0])}"
        text = (f"Fetch {what} from the web and classify it?\n\nAt most {MAX_BYTES / 1e6:.0f} MB per image, "
                f"{TIMEOUT_S:.0f} s timeout.")  # fmt: skip
        if not self.ask("Fetch from the web", text):
            self.statusBar().showMessage("Nothing was fetched", 4000)
            return
        self._add([(u, os.path.basename(u.split("?")[0]) or host_of(u), f"url:{u}") for u in urls])

    def _add(self, entries: list[tuple[str, str, object]]) -> None:
        new = []
        for key, label, source in entries:
            item = self.items.get(key)
            if item is None:
                item = Item(key, label, source)
                label = printable(label)
                item.label = label
                item.list_item = QListWidgetItem(self._blank_icon, label)
                self._keys.append(key)  # the row's data is its index here, not the key itself
                item.list_item.setData(Qt.ItemDataRole.UserRole, len(self._keys) - 1)
                item.list_item.setToolTip(printable(key))
                self.gallery.addItem(item.list_item)
                self.items[key] = item
            item.result, item.error, item.detailed, item.detail_gen = None, None, False, -1
            item.list_item.setText(f"{item.label}\n…")
            new.append(key)
        self.current = new[0]
        self.gallery.setCurrentItem(self.items[new[0]].list_item)  # shows it, asks for it in full
        self._submit(new)

    def _submit(self, keys: list[str]) -> None:
        """The current image in full right away; the other files as one background job (a
        thumbnail, the top-k and CLS attention each); image data and links one by one."""
        if not self.model_ready or not keys:
            return  # all of it runs as soon as the model is loaded
        if self.current in keys:
            self._request_detail(self.current)
        files = [k for k in keys if k != self.current and isinstance(self.items[k].source, str)
                 and not self.items[k].source.startswith("url:")]  # fmt: skip
        in_job = set(files)
        for k in keys:
            if k != self.current and k not in in_job:
                self._request_detail(k, latest_wins=False)
        if files:
            self._busy.add("folder")
            self._set_busy_widgets()
            self.requestMany.emit(self._model_gen, files)

    def _on_notice(self, text: str, device: str) -> None:
        self.statusBar().showMessage(text, 15000)
        fast = " · fast" if self.fast_action.isChecked() else ""
        self.status_device.setText(device.upper() + fast)

    def _on_dropped(self, gen: int, key: str) -> None:
        """A full request the worker skipped because a newer one replaced it: ask again when
        it is shown; an image with no result at all runs in the background."""
        item = self.items.get(key)
        if item is None or gen < self._model_gen or item.detailed:
            return
        item.detail_gen = -1
        if key == self.current:
            self._request_detail(key)
        elif item.result is None and item.error is None:
            self._submit([key])

    def _request_detail(self, key: str, latest_wins: bool = True) -> None:
        item = self.items[key]
        if item.detail_gen == self._model_gen or not self.model_ready:
            return
        item.detail_gen = self._model_gen
        seq = 0
        if latest_wins:  # moving through the gallery: only the last one asked for runs
            self._detail_seq += 1
            seq = self._detail_seq
            self.worker.worker.bump_detail(seq)
        self.requestClassify.emit(self._model_gen, key, item.source, seq)

    # -- results ---------------------------------------------------------------------------
    def _on_result(self, gen: int, key: str, shown) -> None:
        item = self.items.get(key)
        if item is None or gen < self._model_gen:  # from a model that has been replaced
            return
        res = shown.result
        if isinstance(res, ImageFailure):
            self._set_error(item, res.error)
            return
        if item.detailed and not shown.detailed:
            return  # a folder run's lighter result never replaces the full one
        item.result, item.error, item.detailed = res, None, shown.detailed
        if shown.display is not None:
            item.display = render.rgb_to_qimage(shown.display)
        if shown.detailed:
            self._keep_detailed(key)
        top = res.top1
        item.list_item.setText(f"{item.label}\n{top.label} {top.prob * 100:.0f}%")
        item.list_item.setToolTip(f"{printable(key)}\n{top.label}: {top.prob * 100:.1f}%")
        if shown.thumb is not None:
            item.list_item.setIcon(self._square_icon(render.rgb_to_qimage(shown.thumb)))
        if shown.detailed:
            self.status_time.setText(f"{res.latency_ms:.0f} ms")
        if key == self.current:
            self._show(item)

    def _keep_detailed(self, key: str) -> None:
        """Memory stays bounded however many images the session sees: beyond the last
        KEEP_DETAILED shown in full, an image keeps its predictions, CLS attention and
        thumbnail, and is run again in full when it is shown again."""
        order = self._detailed_order
        if key in order:
            order.remove(key)
        order.append(key)
        excess = [k for k in order if k != self.current][: max(0, len(order) - KEEP_DETAILED)]
        for k in excess:  # the oldest first; the image on screen is never dropped
            order.remove(k)
            old = self.items.get(k)
            if old is None:
                continue
            old.display, old.detailed, old.detail_gen = None, False, -1
            res = old.result
            if res is not None and res.attention is not None and res.attention.q is not None:
                light = dataclasses.replace(res.attention, q=None, k=None)
                old.result = dataclasses.replace(res, attention=light)

    @staticmethod
    def _square_icon(img: QImage) -> QIcon:
        """The thumbnail centred on a square, so labels line up under every image."""
        pix = QPixmap(THUMB, THUMB)
        pix.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pix)
        painter.drawImage((THUMB - img.width()) // 2, (THUMB - img.height()) // 2, img)
        painter.end()
        return QIcon(pix)

    def _set_error(self, item: Item, message: str) -> None:
        item.error = message
        item.list_item.setText(f"{item.label}\n⚠ error")
        item.list_item.setToolTip(printable(message))
        self.statusBar().showMessage(printable(message), 10000)
        if item.key == self.current:
            self._show(item)

    def _on_failed(self, gen: int, what: str, message: str) -> None:
        self.errorShown.emit(what, message)
        if what == "model":
            if gen != self._model_gen:
                return
            self._done_busy("download")
            if self._startup and self.model_id is None:
                self._startup = False
                self.statusBar().showMessage(f"{message}; using the demo model", 15000)
                self.device = "auto"  # the saved device may be the reason (a GPU gone)
                self.load_model("demo-shapes")
                return
            if self.model_id is not None:  # the worker still has the previous model
                self.model_ready = True
                self.status_model.setText(self.model_name)
                self.menus.mark_current(self.model_id)
                # What the switch interrupted runs again with the model that stays.
                self._submit([k for k, i in self.items.items() if i.result is None and i.error is None])
            else:
                self.status_model.setText("No model")
            if "cancelled" in message.lower():
                self.statusBar().showMessage(message, 8000)
                return
            if not os.environ.get("VIT_DESKTOP_NO_DIALOGS"):
                QMessageBox.warning(self, "Model", message)
            self.statusBar().showMessage(message, 15000)
            return
        item = self.items.get(what)
        if item is not None:
            self._set_error(item, message)
        else:
            self.statusBar().showMessage(message, 10000)

    # -- long work: progress and cancel ------------------------------------------------------
    def _set_busy_widgets(self) -> None:
        busy = bool(self._busy)
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.status_job.setVisible(busy)

    def _done_busy(self, kind: str) -> None:
        self._busy.discard(kind)
        self._set_busy_widgets()

    def _on_progress(self, gen: int, kind: str, done: int, total: int, text: str) -> None:
        if kind == "folder" and gen < self._model_gen:
            return  # a run for a model that has been replaced
        self._busy.add(kind)
        self._set_busy_widgets()
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.status_job.setText(text)

    def _on_job_finished(self, gen: int, what: str, cancelled: bool) -> None:
        if what == "folder" and gen < self._model_gen:
            return  # closed because the model changed; the new model runs everything again
        self._done_busy(what)
        if what != "folder":
            return
        waiting = [i for i in self.items.values() if i.result is None and i.error is None
                   and isinstance(i.source, str) and i.detail_gen != self._model_gen]  # fmt: skip
        if cancelled:
            for i in waiting:
                i.list_item.setText(f"{i.label}\n(not classified)")
            done = sum(i.result is not None for i in self.items.values())
            self.statusBar().showMessage(f"Cancelled: {done} classified so far are kept (File › Export Results)",
                                         8000)  # fmt: skip
        self.jobDone.emit(cancelled)

    def idle(self) -> bool:
        """Nothing is loading, running or waiting: every image has its result or its error."""
        return (self.model_ready and not self._busy
                and all(i.result is not None or i.error is not None for i in self.items.values()))  # fmt: skip

    def _cancel(self) -> None:
        self.worker.worker.cancel()

    # -- showing ---------------------------------------------------------------------------
    def step_gallery(self, step: int) -> None:
        row = self.gallery.currentRow() + step
        if 0 <= row < self.gallery.count():
            self.gallery.setCurrentRow(row)

    def _on_gallery(self, cur: QListWidgetItem | None, prev) -> None:
        if cur is None:
            return
        key = self._keys[cur.data(Qt.ItemDataRole.UserRole)]
        self.current = key
        item = self.items[key]
        self._show(item)
        if not item.detailed and item.error is None:
            self._request_detail(key)

    def _show(self, item: Item) -> None:
        self._hover_token = None
        if item.display is None:
            self.view.set_image(None)
            self.view.placeholder = printable(item.error) if item.error else (
                "Classifying…" if self.model_ready else "Loading the model…")
            self.view.update()
            self.predictions.set_result(item.result)
            return
        res = item.result
        if self.view._image is not item.display:
            self.view.set_image(item.display, res.geometry.original_size if res else None)
        self.view.set_geometry(res.geometry if res else None)
        self.predictions.set_result(res)
        if res is not None and res.attention is not None:
            self.attention.configure(res.attention.num_layers, res.attention.num_heads)
        self.redraw()

    def current_map(self) -> np.ndarray | None:
        item = self.items.get(self.current or "")
        if item is None or item.result is None or item.result.attention is None or not item.detailed:
            return None
        att = item.result.attention
        spec = self.attention.settings().map_spec()
        return maps.compute(att, spec, self._hover_token or 0)

    def redraw(self, full: bool = True) -> None:
        """The overlay from the cached result; ``full`` (a control changed, not the hover)
        also saves the settings and redraws the per-head maps."""
        s = self.attention.settings()
        if full:
            self.settings.set_overlay(
                kind=s.kind, fusion=s.fusion, discard=s.discard, opacity=s.opacity, cmap=s.cmap
            )
        item = self.items.get(self.current or "")
        grid = self.current_map()
        if grid is None or item is None or item.result is None or item.display is None:
            self.view.set_overlay(None)
            return
        geom = item.result.geometry
        ow, oh = geom.original_size
        scale = min(1.0, OVERLAY_MAX_SIDE / max(ow, oh))
        size = (max(1, round(ow * scale)), max(1, round(oh * scale)))
        rgba = render.overlay_rgba(grid, geom, size, s.cmap, s.opacity)
        self.view.set_overlay(render.rgba_to_qimage(rgba))
        if full:
            att = item.result.attention
            layer = s.layer if s.layer < att.num_layers else att.num_layers - 1
            self.attention.set_head_images([QPixmap.fromImage(i) for i in render.heads_grid(att, layer, s.cmap)])
        self.overlayDrawn.emit()

    def _on_hover(self, row: int, col: int) -> None:
        item = self.items.get(self.current or "")
        if item is None or item.result is None:
            return
        self._hover_token = 1 + row * item.result.geometry.patch_grid[1] + col
        self.redraw(full=False)

    def _on_hover_left(self) -> None:
        if self._hover_token is not None:
            self._hover_token = None
            self.redraw(full=False)

    # -- drops and paste -------------------------------------------------------------------
    def paste(self) -> None:
        if not self._accept_mime(QGuiApplication.clipboard().mimeData()):
            self.statusBar().showMessage("The clipboard holds no image, path or web link", 5000)

    def _accept_mime(self, md) -> bool:
        payload = transfer.mime_payload(md)
        if payload.paths:
            self.add_paths(payload.paths)
        for img in payload.images:
            self.add_image_data(img)
        if payload.urls:
            self.add_urls(payload.urls)
        return bool(payload)

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        ok, text = transfer.describe_drop(event.mimeData())
        self.view.set_drop_hint((ok, text))
        self.statusBar().showMessage(text, 4000)
        if ok:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:  # noqa: N802
        self.view.set_drop_hint(None)

    def dropEvent(self, event) -> None:  # noqa: N802
        self.view.set_drop_hint(None)
        if self._accept_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    # -- closing ---------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.set_window_state(self.saveGeometry(), self.saveState())
        self.settings.sync()
        if not self.worker.stop(2000):
            # Something that cannot be interrupted (importing PyTorch, reading a file) is
            # still running: keep the thread object alive so Qt never destroys a running
            # thread; the app exits without waiting for it (see app.run_app).
            if not STILL_RUNNING:
                atexit.register(_wait_for_stuck_workers)
            STILL_RUNNING.append(self.worker)
        super().closeEvent(event)
