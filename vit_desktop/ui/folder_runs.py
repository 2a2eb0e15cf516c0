"""Folder runs in the worker: many files in the background, one batch per event-loop turn,
so a full request for the image on screen is always served between batches.

Each run is a job (:mod:`.jobs`): progress "Classifying N of M", Cancel keeps what is done,
a new model closes the old model's runs.  Decoding happens on the classifier's own decode
pool (:meth:`Classifier.iter_classify`), which also makes each file's thumbnail there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, Signal, Slot

from .jobs import Job, JobKind
from .outcome import Shown, explain
from .pixels import thumbnail

#: Images per forward pass and per event-loop turn.
JOB_BATCH = 8


class Interrupted(Exception):
    """Raised between encoder layers when a folder run is cancelled or the app closes."""


@dataclass
class _Run:
    job: Job
    keys: list
    queued_at: int  # the worker's full-run count when queued: keys run in full after it are skipped
    it: Iterator | None = field(default=None, repr=False)


class FolderRuns(QObject):
    _step = Signal()  # queued to itself: one batch per event-loop turn

    def __init__(self, worker) -> None:
        super().__init__(worker)  # a child: it moves to the worker's thread with it
        self.worker = worker
        self.runs: deque[_Run] = deque()
        self.stepping = False
        self.done = self.total = 0  # images finished / queued since the queue was empty
        self.thumbs: dict[str, object] = {}
        self._cancel_check = None  # the running batch's cancel check, during its forward
        self._step.connect(self._run_step, Qt.ConnectionType.QueuedConnection)

    def watch(self, clf) -> None:
        """A forward pre-hook on every attention layer: a long forward (a big model on a slow
        CPU) stops at the next layer when the window closes or the folder run is cancelled.
        A plain function (not a bound method), so fast mode's copy of the model keeps it."""
        from ..core.capture import attention_modules

        closing, runs = self.worker.cancels.closing, self

        def check(module, args) -> None:
            cancelled = runs._cancel_check
            if closing.is_set() or (cancelled is not None and cancelled()):
                raise Interrupted()

        for m in attention_modules(clf.module):  # the modules the model's family names
            m.register_forward_pre_hook(check)

    def add(self, generation: int, keys: list, job_id: int, cancelled=None) -> None:
        if not self.runs:
            self.done = self.total = 0
        job = self.worker.job(JobKind.FOLDER, generation, job_id, cancelled)
        self.runs.append(_Run(job, list(keys), queued_at=self.worker.full_runs))
        self.total += len(keys)
        if not self.stepping:
            self.stepping = True
            self._step.emit()

    def _keys(self, run: _Run) -> Iterator[str]:
        """The run's files, lazily, skipping those shown in full since it was queued."""
        for key in run.keys:
            if self.worker.detailed.get(key, -1) > run.queued_at:
                self.done += 1
                continue
            yield key

    def _decoded(self, loaded) -> None:  # on a decode thread
        self.thumbs[loaded.source] = thumbnail(loaded.image)

    @Slot()
    def _run_step(self) -> None:
        w = self.worker
        run = self.runs[0] if self.runs else None
        if run is None:
            self.stepping = False
            return
        generation = run.job.state.generation
        if run.job.cancelled() or w.stale(generation) or w.clf is None:
            # A Cancel press stops every run queued before it; a new model, every old run.
            for r in [
                r for r in self.runs if w.clf is None or r.job.cancelled() or w.stale(r.job.state.generation)
            ]:
                self._close(r, cancelled=r.job.cancelled() or w.clf is None)
            if self.runs:
                self.done, self.total = 0, sum(len(r.keys) for r in self.runs)
                self._step.emit()
            else:
                self.stepping = False
            return
        try:
            if run.it is None:
                self.thumbs.clear()
                run.it = w.clf.iter_classify(self._keys(run), batch_size=JOB_BATCH, top_k=20, attention="cls",
                                             on_decoded=self._decoded)  # fmt: skip
            for _ in range(JOB_BATCH):
                self._cancel_check = run.job.cancelled
                try:
                    res = next(run.it)
                finally:
                    self._cancel_check = None
                self.done += 1
                w.resultReady.emit(generation, res.source,
                                   Shown(res, None, self.thumbs.pop(res.source, None), detailed=False))  # fmt: skip
            self._report(run)
            w.tell_notices()
        except Interrupted:
            self.close_all()
            return
        except StopIteration:
            self._report(run)
            w.tell_notices()
            self.runs.popleft()
            run.job.finish()
            if not self.runs:
                self.stepping = False
                return
        except Exception as exc:
            message = explain("folder run failed", exc)
            w.failed.emit(generation, "folder", message)
            self.close_all(error=message)
            return
        self._step.emit()

    def _report(self, run: _Run) -> None:
        run.job.progress(self.done, self.total, f"Classifying {self.done} of {self.total}")

    def _close(self, run: _Run, cancelled: bool = True, error: str = "") -> None:
        if run.it is not None:
            run.it.close()
        if run in self.runs:
            self.runs.remove(run)
        run.job.finish(cancelled=cancelled, error=error)

    def close_all(self, error: str = "", silent: bool = False) -> None:
        """Close every run (Cancel during a forward, the app closing, a failure); ``silent``
        after the thread stopped, when nobody is listening any more."""
        for run in list(self.runs):
            if silent:
                if run.it is not None:
                    run.it.close()
                self.runs.remove(run)
            else:
                self._close(run, cancelled=not error, error=error)
        self.stepping = False
