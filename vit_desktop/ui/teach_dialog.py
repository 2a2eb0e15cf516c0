"""File › New Classifier…: teach a classifier your own classes from a folder of examples.

Choose (or drop) a folder whose sub-folders are the classes: the classes found, their image
counts and what is wrong with the folder show before anything is trained.  Choose the
backbone (the window's model, the demo model, catalog models on disk, any checkpoint), the
mode, augmentation and the seed, and Train: the worker teaches (:mod:`.teach_worker`, a job
with progress and Cancel in the status bar) and the result shows on the right
(:mod:`.teach_result`).  Save As… writes the model file in the worker; the window then opens
it like Model › Load Checkpoint… does, and it joins Model › Recent.

One dialog per window, not modal: a misclassified image clicked opens in the window.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.teach.dataset import FEW
from ..core.text import display, short_name
from . import plain
from .jobs import JobKind, JobUpdate, new_job_id
from .teach_backbones import BackboneChoice
from .teach_result import TeachResult, fit_rows, suggested_name
from .teach_worker import SaveOutcome, Scanned, TeachOutcome, TeachRequest

MODES = (("Linear (default)", "linear", "A linear head on the last block's features: seconds, and often enough"),
         ("Multi-layer features", "multilayer", "A linear head on the features of the last four blocks"),
         ("Fine-tune last block", "finetune", "The last block trained with the head for a few epochs: slower"))  # fmt: skip
SCAN_DELAY_MS = 300  # typing a folder's path: scanned once the typing pauses
ERROR_STYLE = "color: #b00020;"


def open_teach_dialog(win) -> TeachDialog:
    """Show the window's New Classifier dialog (made on first use, kept while it lives)."""
    dialog = getattr(win, "teach_dialog", None)
    if dialog is None:
        dialog = win.teach_dialog = TeachDialog(win)
    dialog.backbone.refresh()
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog


class TeachDialog(QDialog):
    requestScan = Signal(int, object)  # request number, folder
    # generation, run, TeachRequest, job id, the cancel check taken when asked
    requestTrain = Signal(int, int, object, int, object)
    requestSave = Signal(int, object)  # run, path
    outcomeShown = Signal(object)  # a TeachOutcome arrived (shown, or its error said)
    savedShown = Signal(object)  # a SaveOutcome arrived

    def __init__(self, win) -> None:
        super().__init__(win)
        self.win = win
        self.setWindowTitle("New Classifier")
        self.setAcceptDrops(True)
        self.resize(1120, 700)
        self.ask_save_path = self._ask_save_path  # replaced in tests: the file a person would choose
        self._scan_seq = self._run = 0
        self._job: int | None = None
        self._scan: Scanned | None = None
        self._build()
        runs = win.worker.worker.teacher
        self.requestScan.connect(runs.scan)
        self.requestTrain.connect(runs.train)
        self.requestSave.connect(runs.save)
        runs.scanned.connect(self._on_scanned)
        runs.trained.connect(self._on_trained)
        runs.saved.connect(self._on_saved)
        win.worker.worker.jobUpdate.connect(self._on_job)
        win.installEventFilter(self)  # the window closing closes this too
        self._scan_timer = QTimer(self, singleShot=True, interval=SCAN_DELAY_MS)
        self._scan_timer.timeout.connect(self.scan)

    def _build(self) -> None:
        left = QWidget()
        left.setFixedWidth(400)
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)
        intro = plain.label("A folder with one sub-folder of images per class (or drop one here):")
        intro.setWordWrap(True)
        col.addWidget(intro)
        row = QHBoxLayout()
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("Folder of examples")
        self.folder.textEdited.connect(lambda _: self._scan_timer.start())
        self.folder.returnPressed.connect(self.scan)
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_folder)
        row.addWidget(self.folder, 1)
        row.addWidget(choose)
        col.addLayout(row)
        self.classes = QTableWidget(0, 2)
        self.classes.setHorizontalHeaderLabels(["Class", "Images"])
        self.classes.verticalHeader().hide()
        self.classes.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.classes.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.classes.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.classes.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        col.addWidget(self.classes)
        self.found = plain.label("")  # "4 classes, 60 images", or why the folder cannot be used
        self.found.setWordWrap(True)
        col.addWidget(self.found)
        self.warnings = plain.label("")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #8a5a00;")
        col.addWidget(self.warnings)
        col.addStretch(1)
        form = QFormLayout()
        self.backbone = BackboneChoice(self.win)
        form.addRow("Backbone", self.backbone)
        self.mode = QComboBox()
        for i, (text, mode, tip) in enumerate(MODES):
            self.mode.addItem(text, mode)
            self.mode.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        form.addRow("Mode", self.mode)
        self.augment = QCheckBox("Augment (flips, rotations, crops, colour)")
        self.augment.setToolTip("Four changed copies of every image are taught too: slower, often better")
        form.addRow("", self.augment)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("The same seed, folder and settings teach the same classifier")
        form.addRow("Seed", self.seed)
        col.addLayout(form)
        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop teaching (as the status bar's Cancel does)")
        self.cancel_button.clicked.connect(self.win.worker.worker.cancel)
        self.cancel_button.hide()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        col.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.hide()
        col.addWidget(self.progress)
        self.message = plain.label("")  # one line: progress, or why nothing was taught
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.message)
        self.result = TeachResult()
        self.result.saveRequested.connect(self.save_as)
        self.result.trainAgainRequested.connect(self.train)
        self.result.imageChosen.connect(self._open_image)
        lay = QHBoxLayout(self)
        lay.addWidget(left)
        lay.addWidget(self.result, 1)
        for button in self.findChildren(QPushButton):  # Return in the folder's field reads it, nothing more
            button.setAutoDefault(False)

    # -- the folder ----------------------------------------------------------------------------
    def set_folder(self, path: str) -> None:
        self.folder.setText(path)
        self.scan()

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of examples (one sub-folder per class)",
                                                self.folder.text())  # fmt: skip
        if path:
            self.set_folder(path)

    def scan(self) -> None:
        """Ask the worker what the folder holds (the latest request wins)."""
        self._scan_timer.stop()
        folder = self.folder.text().strip()
        self._scan_seq += 1
        self._scan = None
        if not folder:
            self._show_scan(Scanned(self._scan_seq, ""))
            return
        self.win.worker.worker.teacher.bump_scan(self._scan_seq)
        self.found.setText("Reading the folder…")
        self.found.setStyleSheet("")
        self.requestScan.emit(self._scan_seq, folder)

    def _on_scanned(self, s: Scanned) -> None:
        if s.seq == self._scan_seq:
            self._show_scan(s)

    def _show_scan(self, s: Scanned) -> None:
        self._scan = s
        self.classes.setRowCount(len(s.counts))
        for i, (name, n) in enumerate(s.counts):
            count = QTableWidgetItem(str(n))
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if n < FEW:
                count.setToolTip(f"fewer than {FEW} images: the figures will be rough")
            self.classes.setItem(i, 0, QTableWidgetItem(plain.shown(name)))
            self.classes.setItem(i, 1, count)
        fit_rows(self.classes)
        if s.error:
            self.found.setText(display(s.error))
        elif s.counts:
            self.found.setText(f"{len(s.counts)} classes, {sum(n for _, n in s.counts)} images")
        else:
            self.found.setText("")
        self.found.setStyleSheet(ERROR_STYLE if s.error else "")
        self.warnings.setText("\n".join(f"⚠ {display(w)}" for w in s.warnings))
        self._enable()

    # -- training ----------------------------------------------------------------------------
    def request(self) -> TeachRequest:
        return TeachRequest(self.folder.text().strip(), self.backbone.chosen(),
                            self.mode.currentData(), self.augment.isChecked(), self.seed.value(),
                            self.win.models.device)  # fmt: skip

    def train(self) -> None:
        """Teach with the settings on screen (a second press while it runs does nothing)."""
        if self._job is not None:
            return
        req = self.request()
        if not req.folder:
            self._say("Choose a folder of examples first", error=True)
            return
        self._run += 1
        self._job = new_job_id()
        gen = self.win.session.model_generation
        self.win.status.update(JobUpdate(self._job, JobKind.TEACH, gen, 0, 0, "Teaching…"))
        self._say("Teaching…")
        self._busy(True)
        # The cancel mark is taken here: a Cancel pressed before the worker starts it counts.
        self.requestTrain.emit(gen, self._run, req, self._job, self.win.worker.worker.cancels.check())

    def _on_job(self, u: JobUpdate) -> None:
        if u.job != self._job:
            return
        if u.finished:
            self._job = None
            self._busy(False)
            return
        self.progress.setRange(0, u.total)
        self.progress.setValue(u.done)
        self._say(u.text)

    def _on_trained(self, o: TeachOutcome) -> None:
        if o.run != self._run:
            return
        if o.error:
            self._say(o.error, error=not o.cancelled)
        else:
            self._say(f"Taught in {o.seconds:.1f} s")
            self.result.show_outcome(o)
        self._busy(self._job is not None)
        self.outcomeShown.emit(o)

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.result.set_busy(busy)
        self._enable()

    def _enable(self) -> None:
        bad = self._scan is not None and bool(self._scan.error)
        self.train_button.setEnabled(self._job is None and not bad and bool(self.folder.text().strip()))

    def _say(self, text: str, error: bool = False) -> None:
        self.message.setText(display(text))
        self.message.setToolTip(plain.tooltip(text) if text else "")
        self.message.setStyleSheet(ERROR_STYLE if error else "")

    # -- saving ------------------------------------------------------------------------------
    def _ask_save_path(self, suggested: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Save the classifier", suggested,
                                              "Classifier (*.safetensors)")  # fmt: skip
        return path

    def save_as(self) -> None:
        o = self.result.outcome
        if o is None:
            return
        start = os.path.join(os.path.dirname(os.path.normpath(o.request.folder)), suggested_name(o))
        path = self.ask_save_path(start)
        if not path:
            return
        self.result.save_button.setEnabled(False)
        self.result.say(f"Saving {short_name(path)}…")
        self.requestSave.emit(o.run, path)

    def _on_saved(self, s: SaveOutcome) -> None:
        self.result.set_busy(self._job is not None)
        if s.error:
            self.result.say(s.error, error=True)
        else:
            self.result.say(f"Saved {short_name(s.path)} and its report; the window now runs it")
            self.win.load_model(s.path)  # as Model › Load Checkpoint… does; it joins Model › Recent
        self.savedShown.emit(s)

    # -- the window ---------------------------------------------------------------------------
    def _open_image(self, path: str) -> None:
        self.win.add_paths([path])
        self.win.raise_()
        self.win.activateWindow()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802
        if watched is self.win and event.type() == QEvent.Type.Close:
            self.close()
        return False

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if _dropped_folder(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        folder = _dropped_folder(event.mimeData())
        if folder:
            event.acceptProposedAction()
            self.set_folder(folder)


def _dropped_folder(mime) -> str:
    """The first local folder among dropped links ("" when there is none)."""
    if not mime.hasUrls():
        return ""
    for url in mime.urls():
        path = url.toLocalFile()
        if path and os.path.isdir(path):
            return path
    return ""
