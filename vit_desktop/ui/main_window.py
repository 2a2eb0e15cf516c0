"""The main window: layout and wiring.  What it holds is the session's (:mod:`.session`),
which model runs is the model control's, drawing is the overlay presenter's, files and
drops are the file actions' and the intake's; results come from the one worker thread."""

from __future__ import annotations

import atexit
import os

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QScrollArea, QVBoxLayout, QWidget

from ..core.results import ImageFailure
from ..core.text import display
from . import menus
from .explain_view import ExplainController
from .file_actions import FileActions
from .gallery import Gallery
from .image_view import ImageView
from .intake import Intake
from .jobs import JobKind, JobUpdate, new_job_id
from .model_control import ModelControl
from .offer_bar import OfferBar
from .overlay_view import OverlayPresenter
from .panels import AttentionPanel, PredictionsPanel, ViewSettings
from .samples import SampleOffer
from .session import Session
from .settings import Settings
from .status import StatusPanel
from .worker import WorkerThread

SHARPENING = "Decoding the full-resolution picture…"
STILL_RUNNING: list = []  # worker threads that did not stop within 2 s of a close


def _wait_for_stuck_workers() -> None:
    """At interpreter exit (outside the app, which exits at once): let a worker that was
    busy at close finish, rather than destroy a running thread."""
    for w in STILL_RUNNING:
        w.thread.wait()


class MainWindow(QMainWindow):
    # generation, model ("" = the default), device, whether a download is allowed, labels file
    requestLoad = Signal(int, object, str, bool, object)
    requestClassify = Signal(int, object, object, int)  # generation, key, source, request number
    requestSharp = Signal(int, object, object, int)  # the same, for the sharp copy of a draft on screen
    requestMany = Signal(int, object, int, object)  # generation, file keys, job id, cancel check
    requestCatalog = Signal()
    requestFast = Signal(bool)
    requestInputSize = Signal(object)  # (height, width) for the next model loaded, or None: trained
    # key, source, (map, geometry), colormap, opacity, destination ("" = clipboard)
    requestOverlay = Signal(object, object, object, str, float, str)
    # Emitted on the GUI thread (connect plain functions to these, not to the worker's).
    modelReady = Signal(object)
    overlayDrawn = Signal()
    sharpShown = Signal()  # the sharp screen copy took the draft's place on screen
    fastChanged = Signal(bool, str)  # fast mode on?, why it could not be turned on ("" = fine)
    overlayExported = Signal(str, str)  # destination ("" = clipboard), error ("" = fine)
    errorShown = Signal(object, str)  # what (model or an image key), message
    jobDone = Signal(bool)  # a folder run ended (cancelled?)
    plain_text = Qt.TextFormat.PlainText

    def __init__(self, settings: Settings, model: str | None = None, device: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.session = Session()
        self.setWindowTitle("ViT Desktop")
        self.setAcceptDrops(True)
        self.resize(1200, 760)
        self.setMinimumSize(QSize(800, 500))
        self.ask = self._ask_dialog  # replaced in tests: the person's answer to a question
        self._build_panes()
        self.status = StatusPanel(self.statusBar(), self._cancel)
        self.worker = WorkerThread()
        self.overlay = OverlayPresenter(self.view, self.attention, settings, self)
        self.files = FileActions(self)
        self.intake = Intake(self)
        self._connect_worker()
        self.explain = ExplainController(self)  # target class, class-specific maps, faithfulness
        self.samples = SampleOffer(self)  # "Try sample images" while the window is empty
        menus.build_file_menu(self)
        self.models = ModelControl(self, model, device)
        self.overlay.drawn.connect(self.overlayDrawn)
        self.models.fastChanged.connect(self.fastChanged)
        self.files.overlayExported.connect(self.overlayExported)
        menus.build_view_and_help_menus(self)
        ov = settings.overlay()
        self.view.set_show_grid(ov["grid"])
        self.grid_action.setChecked(ov["grid"])
        self.attention.apply(ViewSettings(kind=ov["kind"], fusion=ov["fusion"], discard=ov["discard"],
                                          opacity=ov["opacity"], cmap=ov["cmap"]))  # fmt: skip
        geom, state = settings.window_state()
        if geom is not None:
            self.restoreGeometry(geom)
        if state is not None:
            self.restoreState(state)
        QTimer.singleShot(0, self.models.start)

    def _build_panes(self) -> None:
        self.view = ImageView()
        self.offer_bar = OfferBar()
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.offer_bar)
        lay.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self.predictions = PredictionsPanel()
        self.attention = AttentionPanel()
        self.gallery = Gallery()
        self.gallery.rowShown.connect(self._on_row_shown)
        self.view.stepRequested.connect(self.gallery.step)
        scroll = QScrollArea()  # the attention panel scrolls instead of overlapping on small screens
        scroll.setWidget(self.attention)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(300)
        self.docks: dict[str, QDockWidget] = {}
        right, bottom = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.BottomDockWidgetArea
        for name, widget, area in (("Predictions", self.predictions, right), ("Attention", scroll, right),
                                   ("Gallery", self.gallery, bottom)):  # fmt: skip
            dock = QDockWidget(name, self)
            dock.setObjectName(name)
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[name] = dock
        # The right-hand panels run the full height; the gallery sits under the image only.
        self.setCorner(Qt.Corner.BottomRightCorner, right)

    def _connect_worker(self) -> None:
        w = self.worker.worker
        self.requestLoad.connect(w.load_model)
        self.requestClassify.connect(w.classify)
        self.requestSharp.connect(w.sharpen)
        w.sharpReady.connect(self._on_sharp)
        self.requestMany.connect(w.classify_many)
        self.requestCatalog.connect(w.describe)
        self.requestOverlay.connect(w.render_overlay)
        self.requestFast.connect(w.set_fast)
        self.requestInputSize.connect(w.want_input_size)
        w.view_settings = self.overlay.wanted  # a new result's overlay is drawn in the worker
        w.dropped.connect(self._on_dropped)
        w.notice.connect(self._on_notice)
        w.resultReady.connect(self._on_result)
        w.failed.connect(self._on_failed)
        w.jobUpdate.connect(self.on_job)

    # -- for tests, the screenshot and single-instance: the window's state in a few words --
    @property
    def items(self) -> dict:
        return self.session.items

    @property
    def current(self):
        return self.session.current

    @property
    def model_ready(self) -> bool:
        return self.session.model_ready

    @property
    def model_id(self) -> str | None:
        return self.models.model_id

    def idle(self) -> bool:
        """Nothing is loading, running or waiting: every image has its result or its error."""
        return self.session.idle() and not self.status.running()

    def current_map(self):
        return self.overlay.current_map()

    def add_paths(self, paths: list[str]) -> None:
        self.intake.add_paths(paths)

    def load_model(self, model: str, allow_download: bool = False, labels: str = "") -> None:
        self.models.load(model, allow_download, labels)

    # -- small actions -------------------------------------------------------------------
    def fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.add_paths([p]))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def set_grid(self, on: bool) -> None:
        self.view.set_show_grid(on)
        self.settings.set_overlay(grid=on)

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def _ask_dialog(self, title: str, text: str) -> bool:
        if os.environ.get("VIT_DESKTOP_NO_DIALOGS"):
            return False  # nothing is fetched or downloaded without a person saying yes
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        box.setTextFormat(self.plain_text)  # a link's text is never markup
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        return box.exec() == QMessageBox.StandardButton.Yes

    # -- images in, work out -------------------------------------------------------------
    def add(self, entries: list, show: bool = True) -> None:
        """New images: a gallery row each, all of them run; the first is shown when ``show``
        (a folder's later batches do not take the screen from the image on it)."""
        show = show or self.session.current is None
        created, keys = self.session.add(entries, make_current=show)
        if not keys:
            return
        for item in created:
            self.gallery.add(item)
        for key in keys:
            self.gallery.pending(self.items[key])
        if show:
            self.gallery.select(self.items[keys[0]])  # shows it, asks for it in full
        self.submit(keys)

    def submit(self, keys: list) -> None:
        """The current image in full right away; the other files as one background job (a
        thumbnail, the top-k and CLS attention each); image data and links one by one."""
        plan = self.session.plan(keys)
        for key in plan.detail:
            self.request_detail(key)
        for key in plan.singles:
            self.request_detail(key, latest_wins=False)
        if plan.folder:
            gen, job = self.session.model_generation, new_job_id()
            self.status.update(JobUpdate(job, JobKind.FOLDER, gen, 0, len(plan.folder), "Classifying…"))
            # The cancel mark is taken here: Cancel pressed before the worker starts it counts.
            self.requestMany.emit(gen, list(plan.folder), job, self.worker.worker.cancels.check())

    def resubmit(self) -> None:
        """Everything still waiting runs (again) with the model there is now."""
        self.submit(self.session.waiting())

    def request_detail(self, key, latest_wins: bool = True) -> None:
        item = self.session.item(key)
        if item is None or item.error is not None:
            return
        seq = self.session.detail_request(key, latest_wins)
        if seq is None:
            return
        if seq:  # moving through the gallery: only the last one asked for runs
            self.worker.worker.bump_detail(seq)
        self.requestClassify.emit(self.session.model_generation, key, item.source, seq)

    def model_loaded(self, model_id: str) -> None:
        self.session.model_loaded()
        self.modelReady.emit(model_id)
        self.submit(list(self.items))

    def _on_dropped(self, gen: int, key) -> None:
        """A full request the worker skipped because a newer one replaced it."""
        what = self.session.dropped(gen, key)
        if what == "detail":
            self.request_detail(key)
        elif what == "background":
            self.submit([key])

    # -- results ---------------------------------------------------------------------------
    def _on_result(self, gen: int, key, shown) -> None:
        res = shown.result
        if isinstance(res, ImageFailure):
            self._set_error(gen, key, res.error)
            return
        item = self.session.accept(gen, key, res, shown.detailed, shown.drawing)
        if item is None:
            return
        if shown.display is not None:
            self.session.take_display(item, shown.display, shown.display.draft)
        if shown.detailed:
            self.session.keep_detailed(key)
            self.status.time.setText(f"{res.latency_ms:.0f} ms")
        self.gallery.result(item, shown.thumb)
        if key == self.current:
            self._show()

    def _set_error(self, gen: int, key, message: str) -> None:
        item = self.session.fail(gen, key, message)
        if item is None:
            return
        self.gallery.error(item)
        self.status.say(message, 10000)
        if key == self.current:
            self._show()

    def _on_failed(self, gen: int, what, message: str) -> None:
        self.errorShown.emit(what, message)
        if what == "model":
            self.models.failed(gen, message)
        elif what in self.items:
            self._set_error(gen, what, message)
        else:
            self.status.say(message, 10000)

    def _on_notice(self, text: str, device: str) -> None:
        self.status.say(text, 15000)
        self.status.set_device(device, self.models.fast_action.isChecked())

    # -- long work: progress and cancel ------------------------------------------------------
    def on_job(self, u: JobUpdate) -> None:
        if u.kind is JobKind.FOLDER and self.session.stale(u.generation):
            return  # a run for a model that has been replaced; the new model runs everything
        self.status.update(u)
        if u.kind is not JobKind.FOLDER or not u.finished:
            return
        if u.cancelled or u.error:
            for item in self.session.not_run():
                self.gallery.not_classified(item)
            done = self.session.classified()
            why = "Cancelled" if u.cancelled else f"Stopped ({u.error})"
            self.status.say(f"{why}: {done} classified so far are kept (File › Export Results)", 8000)
        self.jobDone.emit(u.cancelled)

    def _cancel(self) -> None:
        self.worker.worker.cancel()

    # -- showing ---------------------------------------------------------------------------
    def _on_row_shown(self, row: int) -> None:
        key = self.session.keys[row]
        self.session.current = key
        self._show()
        item = self.items[key]
        if not item.detailed:
            self.request_detail(key)

    def _show(self) -> None:
        item = self.session.shown
        if item is None:
            return
        if item.error:
            placeholder = display(item.error)
        else:
            placeholder = "Classifying…" if self.model_ready else "Loading the model…"
        self.predictions.set_result(item.result)
        self.overlay.show(item, placeholder)
        self._ask_sharp(item.key)

    def _ask_sharp(self, key) -> None:
        """Shown from a draft decode: the worker decodes the sharp copy (said in the status
        bar only when it takes over a second)."""
        seq = self.session.sharp_request(key)
        if seq is None:
            return
        self.worker.worker.bump_detail(seq)
        self.requestSharp.emit(self.session.model_generation, key, self.items[key].source, seq)
        QTimer.singleShot(1000, self, lambda: self._sharp_late(key, seq))

    def _sharp_late(self, key, seq: int) -> None:
        item = self.session.item(key)
        if key == self.current and item is not None and item.sharp_asked == seq:
            self.status.say(SHARPENING, 10000)

    def _on_sharp(self, key, seq: int, copy) -> None:
        item = self.session.sharp_arrived(key, seq, copy)
        if self.statusBar().currentMessage() == SHARPENING:
            self.statusBar().clearMessage()
        if item is not None and key == self.current:
            self.view.swap_image(copy)  # same original size: the overlay and the view stay put
            self.sharpShown.emit()

    # -- drops and paste -------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        self.intake.drag_enter(event)

    def dragLeaveEvent(self, event) -> None:  # noqa: N802
        self.intake.drag_leave()

    def dropEvent(self, event) -> None:  # noqa: N802
        self.intake.drop(event)

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
