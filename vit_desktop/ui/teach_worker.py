"""Teaching a classifier in the worker thread (File › New Classifier…), never on the GUI thread.

A child of the worker (:class:`.worker.InferenceWorker`), so its slots run on the worker's
thread, between folder batches and full requests.  Three requests:

* :meth:`TeachRuns.scan` — the classes of a folder and what is wrong with it, before any
  training (numbered: only the latest is answered);
* :meth:`TeachRuns.train` — :func:`core.teach.train.train` as a job (:mod:`.jobs`): progress
  and Cancel in the status bar, stopped at its next batch when the window closes.  The
  backbone is the window's model, or another one loaded here (and kept for the next run);
* :meth:`TeachRuns.save` — :func:`core.teach.saved.save` of the latest classifier taught.

The taught module stays here; the window gets frozen summaries (numpy thumbnails of the
misclassified images, made here).  torch is imported inside the slots only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from ..core.teach.dataset import TeachCancelled, TeachError, scan
from ..core.text import short_name
from .folder_runs import Interrupted
from .jobs import Job, JobKind
from .outcome import explain
from .pixels import THUMB_SIDE, thumbnail

THUMBS_MAX = 120  # misclassified images shown as thumbnails (the rest are counted)


@dataclass(frozen=True)
class TeachRequest:
    """What to teach: ``backbone`` a catalog id or a model file (the window's model, when it
    is that one, is used as it runs)."""

    folder: str
    backbone: str
    mode: str = "linear"
    augment: bool = False
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class Scanned:
    """A folder's classes and image counts, its warnings, or why it cannot be taught from."""

    seq: int
    folder: str
    counts: tuple[tuple[str, int], ...] = ()
    warnings: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True, eq=False)
class Wrong:
    """One misclassified image: where it is, what it is and what the classifier said."""

    path: str
    true: str
    predicted: str
    confidence: float
    thumb: np.ndarray | None  # uint8 RGB, or None when it could not be read again


@dataclass(frozen=True, eq=False)
class TeachOutcome:
    """How a run ended: the figures of :class:`core.teach.train.Taught`, or ``error``
    (one line) / ``cancelled``."""

    run: int
    request: TeachRequest
    backbone: str = ""  # the backbone's name
    classes: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    accuracy: float | None = None
    per_class: tuple[float | None, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()  # rows: true class, columns: predicted
    evaluation: str = ""
    misclassified: tuple[Wrong, ...] = ()
    wrong_total: int = 0  # misclassified images, thumbnails or not
    warnings: tuple[str, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()  # (path, why) of images left out
    seconds: float = 0.0
    extracted: int = 0
    mode: str = ""
    error: str = ""
    cancelled: bool = False


@dataclass(frozen=True)
class SaveOutcome:
    run: int
    path: str  # the model file written (or asked for, on an error)
    report: str = ""
    error: str = ""


class TeachRuns(QObject):
    scanned = Signal(object)  # Scanned
    trained = Signal(object)  # TeachOutcome
    saved = Signal(object)  # SaveOutcome

    def __init__(self, worker) -> None:
        super().__init__(worker)  # a child: it moves to the worker's thread with it
        self.worker = worker
        self._lock = threading.Lock()
        self._latest_scan = 0
        self.taught: tuple[int, object] | None = None  # (run, core Taught) of the latest success
        self._backbone: tuple[tuple[str, str], object] | None = None  # ((id, device), Classifier)

    # -- called from the GUI thread ---------------------------------------------------------
    def bump_scan(self, seq: int) -> None:
        with self._lock:
            self._latest_scan = max(self._latest_scan, seq)

    def _stale_scan(self, seq: int) -> bool:
        with self._lock:
            return seq < self._latest_scan

    # -- requests ---------------------------------------------------------------------------
    @Slot(int, object)
    def scan(self, seq: int, folder: str) -> None:
        if self._stale_scan(seq):
            return
        cancel = self.worker.cancels.closing.is_set
        try:
            ex = scan(folder, cancel=lambda: cancel() or self._stale_scan(seq), digests=False)
        except TeachError as exc:
            if not self._stale_scan(seq) and not cancel():
                self.scanned.emit(Scanned(seq, folder, error=exc.one_line()))
            return
        except Exception as exc:
            self.scanned.emit(Scanned(seq, folder, error=explain("reading the folder failed", exc)))
            return
        unreadable = tuple(f"unreadable: {why}" for _, why in ex.unreadable)
        self.scanned.emit(Scanned(seq, folder, tuple(ex.counts().items()), ex.warnings + unreadable))

    @Slot(int, int, object, int, object)
    def train(self, generation: int, run: int, request: TeachRequest, job_id: int, cancelled: object) -> None:
        """Teach as job ``job_id``; ``cancelled`` is the cancel check taken when it was asked."""
        w = self.worker
        job = w.job(JobKind.TEACH, generation, job_id, cancelled)
        job.progress(0, 0, "Teaching: reading the folder…")
        name = short_name(request.backbone)

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "features":
                text = (f"Teaching: features of {done} of {total} images" if done < total
                        else "Teaching: fitting the head…")  # fmt: skip
            elif stage == "fitting the head":
                text = f"Teaching: fitting the head ({done + 1} of {total})"
            else:
                text = f"Teaching: {stage}, epoch {done} of {total}"
            job.progress(done, total, text)

        try:
            from ..core.teach.train import Settings, train

            clf = self._backbone_for(request, job)
            name = clf.display_name
            settings = Settings(request.folder, backbone=request.backbone, mode=request.mode,
                                augment=request.augment, seed=request.seed, device=request.device)  # fmt: skip
            taught = train(settings, progress, job.cancelled, clf)
            self.taught = (run, taught)
            outcome = _outcome(run, request, name, taught, job.cancelled)
        except Exception as exc:
            gone = isinstance(exc, (TeachCancelled, Interrupted)) or job.cancelled()
            why = "" if gone else explain("teaching failed", exc)
            job.finish(cancelled=gone, error=why)
            if not gone:
                self.trained.emit(TeachOutcome(run, request, name, error=why))
            elif not w.cancels.closing.is_set():  # the app closing: nobody waits for it
                self.trained.emit(TeachOutcome(run, request, name, error="Cancelled", cancelled=True))
            return
        job.finish()
        self.trained.emit(outcome)

    def _backbone_for(self, request: TeachRequest, job: Job):
        """The window's model when it is the one asked for, else that one, loaded here once
        (kept for the next run: teaching again, or after the window opened the result)."""
        clf = self.worker.clf
        if clf is not None and clf.model_id == request.backbone:
            return clf
        key = (request.backbone, request.device)
        if self._backbone is not None and self._backbone[0] == key:
            return self._backbone[1]
        self._backbone = None  # the old one's memory goes before the new one is loaded
        from ..core.classifier import load_classifier
        from ..core.errors import VitDesktopError

        job.progress(0, 0, f"Teaching: loading {short_name(request.backbone)}…")
        try:
            clf = load_classifier(
                request.backbone, request.device, cancel=job.cancelled, allow_download=False
            )
        except VitDesktopError as exc:
            if job.cancelled():
                raise
            raise TeachError(f"the backbone {short_name(request.backbone)} could not be loaded: "
                             f"{exc.one_line()}") from None  # fmt: skip
        self._backbone = (key, clf)
        return clf

    @Slot(int, object)
    def save(self, run: int, path: str) -> None:
        """Save the classifier of ``run`` (a newer run replaced it: said so) to ``path``."""
        if self.taught is None or self.taught[0] != run:
            self.saved.emit(SaveOutcome(run, path, error="that classifier was replaced by a newer run"))
            return
        try:
            from ..core.teach import saved

            model, report = saved.save(self.taught[1], path)
        except Exception as exc:
            self.saved.emit(SaveOutcome(run, path, error=explain("saving the classifier failed", exc)))
            return
        self.saved.emit(SaveOutcome(run, str(model), str(report)))


def _outcome(run: int, request: TeachRequest, name: str, taught, cancelled) -> TeachOutcome:
    """The figures of ``taught`` and the thumbnails of its misclassified images (read here)."""
    from ..core.images import load_image

    wrong = []
    for m in taught.misclassified[:THUMBS_MAX]:
        if cancelled():
            break
        try:
            thumb = thumbnail(load_image(m.path, min_size=(THUMB_SIDE, THUMB_SIDE)).image)
        except Exception:
            thumb = None
        wrong.append(Wrong(m.path, m.true, m.predicted, m.confidence, thumb))
    return TeachOutcome(
        run, request, name, tuple(taught.classes), tuple(taught.counts[c] for c in taught.classes),
        taught.accuracy, tuple(taught.per_class_accuracy[c] for c in taught.classes),
        tuple(tuple(int(v) for v in row) for row in taught.confusion), taught.evaluation, tuple(wrong),
        len(taught.misclassified), tuple(taught.warnings), tuple(taught.failures.items()), taught.seconds,
        taught.extracted, taught.settings.mode,
    )  # fmt: skip
