"""Class-specific maps and faithfulness scores in the worker thread, never on the GUI thread.

A child of the worker (:class:`.worker.InferenceWorker`), so it lives on the worker's thread
and its slots run there, between folder batches and full requests — never while another
request runs the same model.  Each request is numbered; a newer one of the same kind
replaces it (latest wins): a request that is already stale is skipped, and one that is
running stops at its next block or batch.  Slow work is a job (:mod:`.jobs`): it shows
"Computing …" with Cancel once it has run for :data:`SLOW_S` seconds, with progress for
token occlusion.

The preprocessed input of an image is made from the decoded image the last full run kept,
else decoded again from its source, and kept for the last :data:`PREPARED_KEPT` images.
torch is imported inside the slots only.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from .folder_runs import Interrupted
from .jobs import Job, JobKind
from .methods import ExplainFailure, MapAnswer, MapRequest, ScoreAnswer, ScoreRequest
from .outcome import explain as say_failure
from .session import KEEP_DETAILED

SLOW_S = 0.3  # a map or score that takes longer shows in the status bar, with Cancel
PREPARED_KEPT = KEEP_DETAILED  # preprocessed inputs kept (one 3×H×W float32 array each)


class ExplainRuns(QObject):
    # (generation, MapAnswer)
    mapReady = Signal(int, object)
    # (generation, ScoreAnswer)
    scoreReady = Signal(int, object)
    # (generation, ExplainFailure)
    failed = Signal(int, object)
    # (generation, the model's class names, one per class it was given names for)
    labelsReady = Signal(int, object)

    def __init__(self, worker) -> None:
        super().__init__(worker)  # a child: it moves to the worker's thread with it
        self.worker = worker
        self._lock = threading.Lock()
        self._latest = {"map": 0, "score": 0}
        self._prepared: OrderedDict[object, tuple[object, np.ndarray]] = OrderedDict()  # key → (clf, array)
        self._decoded: tuple[object, object, object] | None = (
            None  # (key, clf, LoadedImage) of the last full run
        )

    # -- called from the GUI thread ---------------------------------------------------------
    def bump(self, what: str, seq: int) -> None:
        """A newer request of ``what`` ("map" or "score") is on its way: older ones are stale."""
        with self._lock:
            self._latest[what] = max(self._latest[what], seq)

    def stale(self, generation: int, what: str, seq: int) -> bool:
        with self._lock:
            newer = seq < self._latest[what]
        return newer or self.worker.stale(generation)

    # -- told by the worker -----------------------------------------------------------------
    def model_loaded(self, generation: int, clf) -> None:
        self._prepared.clear()
        self._decoded = None
        self.labelsReady.emit(generation, tuple(clf.labels))

    def decoded(self, key: object, loaded) -> None:
        """The image a full run just classified (the one on screen, most likely): its first
        map needs no second decode.  Only the last one is kept."""
        self._decoded = (key, self.worker.clf, loaded)
        self._prepared.pop(key, None)  # the file may have changed since it was prepared

    # -- requests ---------------------------------------------------------------------------
    @Slot(int, object, object, int, object, object)
    def explain(self, generation: int, key: object, source: object, seq: int, request: MapRequest,
                cancelled: object) -> None:  # fmt: skip
        """The raw map of ``request`` for the image ``key`` (:func:`core.explain.explain`)."""
        if self.stale(generation, "map", seq):
            return
        total = 0

        def work(clf, batch, cancel, job: Job) -> MapAnswer:
            nonlocal total
            from ..core import explain as ex

            if request.method == "occlusion":
                total = _occlusion_batches(clf, batch)
            t0 = time.perf_counter()
            grid = ex.explain(clf, batch, request.method, request.target, layer=request.layer,
                              fusion=request.fusion, cancel=cancel)  # fmt: skip
            return MapAnswer(key, seq, request, grid, time.perf_counter() - t0)

        def progress(job: Job, calls: int) -> None:
            if total:
                job.progress(
                    min(calls - 1, total), total, f"{request.title}: {min(calls - 1, total)} of {total}"
                )
            elif not job.state.text:
                job.progress(0, 0, f"Computing {request.title}…")

        self._run("map", generation, key, source, seq, cancelled, work, progress, self.mapReady)

    @Slot(int, object, object, int, object, object)
    def score(self, generation: int, key: object, source: object, seq: int, request: ScoreRequest,
              cancelled: object) -> None:  # fmt: skip
        """The deletion and insertion curves of ``request``'s map (:func:`core.faithfulness.curves`)."""
        if self.stale(generation, "score", seq):
            return

        def work(clf, batch, cancel, job: Job) -> ScoreAnswer:
            from ..core import faithfulness

            t0 = time.perf_counter()
            f = faithfulness.curves(clf, batch, np.asarray(request.grid_map), request.target, cancel=cancel,
                                    baseline=request.baseline)  # fmt: skip
            return ScoreAnswer(key, seq, f, time.perf_counter() - t0)

        def progress(job: Job, calls: int) -> None:
            if not job.state.text:
                job.progress(0, 0, f"Scoring the {request.title} map…")

        self._run("score", generation, key, source, seq, cancelled, work, progress, self.scoreReady)

    def _run(self, what, generation, key, source, seq, cancelled, work, progress, signal) -> None:
        w = self.worker
        if w.clf is None:
            self.failed.emit(generation, ExplainFailure(key, seq, what, "no model is loaded yet"))
            return
        job = w.job(JobKind.EXPLAIN, generation, cancelled=cancelled)
        t0, calls = time.perf_counter(), 0

        def cancel() -> bool:
            nonlocal calls
            calls += 1
            if job.cancelled() or self.stale(generation, what, seq):
                return True
            if time.perf_counter() - t0 > SLOW_S:
                progress(job, calls)
            return False

        try:
            from ..core.explain import Cancelled

            batch = self._batch(generation, key, source)
            answer = work(w.clf, batch, cancel, job)
        except Exception as exc:
            _end(job)
            if isinstance(exc, (Cancelled, Interrupted)) or job.cancelled():
                if job.cancelled() and not w.cancels.closing.is_set():
                    self.failed.emit(generation, ExplainFailure(key, seq, what, "Cancelled", cancelled=True))
                return  # replaced by a newer request, or the app closes: nobody waits for it
            self.failed.emit(
                generation, ExplainFailure(key, seq, what, say_failure(f"{what} of {key!r}", exc))
            )
            return
        _end(job)
        w.tell_notices()
        signal.emit(generation, answer)

    def _batch(self, generation: int, key: object, source: object):
        """The preprocessed input (1, 3, H, W) of ``key``, as the full run made it."""
        import torch

        clf = self.worker.clf
        kept = self._prepared.get(key)
        if kept is not None and kept[0] is clf:
            self._prepared.move_to_end(key)
            array = kept[1]
        else:
            last = self._decoded
            loaded = last[2] if last is not None and last[0] == key and last[1] is clf else None
            if loaded is None:
                loaded = self.worker._decode(generation, source, key)
            array = clf.prepare(loaded).array
            self._prepared[key] = (clf, array)
            while len(self._prepared) > PREPARED_KEPT:
                self._prepared.popitem(last=False)
        return torch.from_numpy(array)[None]


def _occlusion_batches(clf, batch) -> int:
    """How many batches token occlusion runs for this input (its progress total; 0 when
    it cannot be told)."""
    try:
        import torch

        from ..core.explain_methods import occlusion_batch
        from ..core.explain_model import parts_of

        parts = parts_of(clf.module)
        with torch.inference_mode():
            n, width = parts.embed(batch.to(clf.device, dtype=torch.float32)).shape[1:]
        patches = n - parts.layout.num_prefix_tokens
        return math.ceil(patches / occlusion_batch(parts, n, width))
    except Exception:
        return 0


def _end(job: Job) -> None:
    """A job that showed itself says that it ended."""
    if job.state.text:
        job.finish(cancelled=job.cancelled())
