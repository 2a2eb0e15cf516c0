"""The status bar: model, device, last inference time, and the long work under way (one
progress bar and Cancel for every job: downloads, web fetches, folder runs, slow maps)."""

from __future__ import annotations

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar

from ..core.text import display
from . import plain
from .jobs import JobKind, JobUpdate


class StatusPanel:
    """Widgets added to ``bar``; ``jobs`` holds the jobs still running, by id."""

    def __init__(self, bar: QStatusBar, cancel) -> None:
        self.bar = bar
        self.model = plain.label("Starting…")  # a checkpoint's file name: plain text
        self.device = QLabel("")
        self.time = QLabel("")
        self.job = plain.label("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(
            "Stop the download, folder run or map being computed (Esc); results so far are kept"
        )
        self.cancel_button.clicked.connect(cancel)
        self.cancel_button.setShortcut(QKeySequence("Esc"))  # only while it is shown
        bar.addWidget(self.model, 1)
        for w in (self.job, self.progress, self.cancel_button, self.device, self.time):
            bar.addPermanentWidget(w)
        self.jobs: dict[int, JobUpdate] = {}
        self._show_busy()

    def say(self, text: str, ms: int = 8000) -> None:
        """A message a person should read (file names and errors shown on one line)."""
        self.bar.showMessage(display(text), ms)

    def set_device(self, device: str, fast: bool) -> None:
        self.device.setText(device.upper() + (" · fast" if fast and device else ""))

    # -- jobs --------------------------------------------------------------------------------
    def running(self, kind: JobKind | None = None) -> bool:
        return any(kind is None or j.kind is kind for j in self.jobs.values())

    def update(self, u: JobUpdate) -> None:
        """Show a job's progress, or forget it when it finished."""
        if u.finished:
            self.jobs.pop(u.job, None)
        else:
            self.jobs[u.job] = u
            self.progress.setRange(0, u.total)
            self.progress.setValue(u.done)
            self.job.setText(u.text)
        self._show_busy()

    def forget(self, kind: JobKind, older_than: int) -> None:
        """Stop showing ``kind`` jobs of replaced model generations."""
        for job_id in [i for i, j in self.jobs.items() if j.kind is kind and j.generation < older_than]:
            del self.jobs[job_id]
        self._show_busy()

    def _show_busy(self) -> None:
        busy = bool(self.jobs)
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.job.setVisible(busy)
