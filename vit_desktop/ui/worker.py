"""The one worker thread: model loading, classification, folders — never on the GUI thread.

A ``QObject`` moved to one ``QThread`` and fed through queued signals.  Every request
carries a generation number; the window drops results whose generation is stale (latest
wins).  Long jobs check a cancel flag between steps.  Every slot catches exceptions and
emits ``failed`` with one readable line; the traceback goes to the log.

torch is imported here only inside the slots, on the worker thread, after the window is up.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from ..logs import get_logger

log = get_logger("worker")


def _explain(what: str, exc: BaseException) -> str:
    """The one line a person sees; the log keeps a traceback only for the unexpected."""
    from ..core.errors import VitDesktopError

    if isinstance(exc, VitDesktopError):
        log.warning("%s: %s", what, exc.one_line())
    else:
        log.exception(what)
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    from ..core.errors import VitDesktopError

    if isinstance(exc, VitDesktopError):
        return exc.one_line()
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


DISPLAY_MAX_SIDE = 2560
THUMB_SIDE = 96
JOB_BATCH = 8


@dataclass(frozen=True)
class Shown:
    result: object  # ClassificationResult | ImageFailure
    display: np.ndarray | None  # uint8 RGB, at most DISPLAY_MAX_SIDE on its longer side
    thumb: np.ndarray | None = None  # uint8 RGB, at most THUMB_SIDE (folder jobs)
    detailed: bool = True  # full attention (q/k) and a display image; False for folder jobs


def display_array(img, side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """The screen copy, at most ``side`` pixels long, shrunk here in the worker with a fast
    reducing resize (a 6000-px photo in ~20 ms, not ~100 with ``thumbnail``)."""
    w, h = img.size
    if max(w, h) <= side:
        return np.asarray(img)
    s = side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


@dataclass
class _Job:
    generation: int
    keys: list
    queued_at: int = 0  # the full-run count when queued: keys run in full after it are skipped
    cancelled: object = None  # true once Cancel is pressed after it was queued
    it: object = None  # the classifier's iterator, once started


WEB_IMAGES_KEPT = 16  # fetched web images kept (model switches and overlays never refetch)


class _Interrupted(Exception):
    """Raised between encoder layers when a folder run is cancelled or the app closes."""


# Keys (file paths) and model paths travel as Python objects, never as Qt strings: a file
# name that is not valid UTF-8 (kept by Python as surrogate escapes) would not survive.


class InferenceWorker(QObject):
    # (generation, model id, display name, device, notice)
    modelLoaded = Signal(int, object, str, str, str)
    # (generation, key, Shown)
    resultReady = Signal(int, object, object)
    # (generation, what failed, message)
    failed = Signal(int, object, str)
    # (generation, key) — a full request skipped because a newer one replaced it
    dropped = Signal(int, object)
    # (generation, kind: download|folder|fetch, done, total, text); downloads in permille
    progress = Signal(int, str, int, int, str)
    # (generation, what finished, cancelled)
    jobFinished = Signal(int, str, bool)
    # list of catalog dicts (with "downloaded"), list of (device, available, reason)
    catalogReady = Signal(list, list)
    # (destination path or "", rendered overlay as a uint8 RGB array or None, error or "")
    overlayRendered = Signal(str, object, str)
    # (fast mode on?, why it could not be turned on or "")
    fastState = Signal(bool, str)
    # (something a person should be told that happened while classifying, the device now)
    notice = Signal(str, str)
    _step = Signal()  # queued to itself: one folder batch per event-loop turn

    def __init__(self) -> None:
        super().__init__()
        self._clf = None
        self._cancels = 0  # Cancel presses so far: work started before a press stops
        self._stopping = threading.Event()  # the window is closing: stop between layers
        self._job_cancelled = None  # the running folder job's cancel check, during its forward
        self._want_fast = False
        self._latest = 0
        self._latest_detail = 0
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque()
        self._stepping = False
        self._detailed: dict[str, int] = {}  # key → the full-run count when it was done in full
        self._full_runs = 0
        self._notices_told = 0
        self._web: OrderedDict[str, object] = OrderedDict()  # link → LoadedImage
        self._thumbs: dict[str, np.ndarray | None] = {}
        self._done = self._total = 0  # folder images finished / queued since the queue was empty
        self._step.connect(self._run_step, Qt.ConnectionType.QueuedConnection)

    # Called from the GUI thread: safe without the event loop.
    def cancel(self) -> None:
        """Cancel what runs or waits now (a download, a fetch, folder runs); later work is
        not affected."""
        with self._lock:
            self._cancels += 1

    def stopping(self) -> None:
        self._stopping.set()
        self.cancel()

    def _canceller(self):
        """A check for work starting now: true once Cancel is pressed (or the app closes)."""
        mark = self._cancels
        return lambda: self._cancels != mark or self._stopping.is_set()

    def _watch(self, clf) -> None:
        """A forward pre-hook on every attention layer: a long forward (a big model on a slow
        CPU) stops at the next layer when the window closes or a folder run is cancelled.
        A plain function (not a bound method), so fast mode's copy of the model keeps it."""
        from torch import nn

        worker, stopping = self, self._stopping

        def check(module, args) -> None:
            job_cancelled = worker._job_cancelled
            if stopping.is_set() or (job_cancelled is not None and job_cancelled()):
                raise _Interrupted()

        for m in clf.module.modules():
            if isinstance(m, nn.MultiheadAttention):
                m.register_forward_pre_hook(check)

    def bump(self, generation: int) -> None:
        with self._lock:
            self._latest = max(self._latest, generation)

    def bump_detail(self, seq: int) -> None:
        with self._lock:
            self._latest_detail = max(self._latest_detail, seq)

    def _stale(self, generation: int, seq: int = 0) -> bool:
        with self._lock:
            # seq 0: always wanted (not part of moving through the gallery)
            return generation < self._latest or (seq != 0 and seq < self._latest_detail)

    @Slot(int, object, str, bool, object)
    def load_model(self, generation: int, model: str, device: str, allow_download: bool = True,
                   labels: str = "") -> None:  # fmt: skip
        """Load ``model`` ("" = the default: ViT-B/16 when its weights are on disk, else the
        demo).  A download (only when allowed) reports progress and stops when cancelled."""
        cancelled = self._canceller()
        self._detailed.clear()
        self._full_runs = 0
        try:
            from ..core.classifier import default_model_id, load_classifier

            model = model or default_model_id()

            def name() -> str:  # only when downloading: the full catalog imports torchvision
                try:
                    from ..core import catalog

                    return catalog.get(model).display_name
                except Exception:  # a checkpoint path
                    return os.path.basename(model)

            def progress(done: int, total: int | None) -> None:
                if total:
                    text = f"Downloading {name()}: {done / 1e6:.0f} of {total / 1e6:.0f} MB"
                    self.progress.emit(generation, "download", int(1000 * done / total), 1000, text)
                else:
                    self.progress.emit(generation, "download", 0, 0, f"Downloading {name()}: {done / 1e6:.0f} MB")

            clf = load_classifier(model, device=device, progress=progress, cancel=cancelled,
                                  allow_download=allow_download, labels=labels or None)  # fmt: skip
            self._watch(clf)
            if self._want_fast:
                why = clf.set_fast(True)
                if why:
                    clf.notices.append(f"fast mode is not available: {why}")
            self._clf = clf
            self._notices_told = len(clf.notices)  # these go out with modelLoaded
            self.fastState.emit(clf.fast, "")
            note = "; ".join(clf.notices)
            self.modelLoaded.emit(generation, clf.model_id, clf.display_name, clf.device.type, note)
        except Exception as exc:  # reported, never swallowed
            self.failed.emit(generation, "model", _explain(f"loading {model} failed", exc))

    @Slot(bool)
    def set_fast(self, on: bool) -> None:
        """Fast mode (bfloat16 on CPUs that have it, float16 on a GPU), kept across models."""
        self._want_fast = on
        if self._clf is None:
            return
        try:
            why = self._clf.set_fast(on)
            self.fastState.emit(self._clf.fast, why or "")
        except Exception as exc:
            self.fastState.emit(False, _explain("fast mode failed", exc))

    @Slot()
    def describe(self) -> None:
        """The model catalog and the devices, as plain data for the menus."""
        try:
            from ..core import catalog, weights
            from ..core.devices import device_status

            models = [e.to_dict(downloaded=weights.is_downloaded(e)) for e in catalog.entries()]
            devices = [(d.name, d.available, d.reason) for d in device_status()]
            self.catalogReady.emit(models, devices)
        except Exception as exc:
            log.exception("listing models failed")
            self.failed.emit(0, "catalog", _one_line(exc))

    @Slot(int, object, object, int)
    def classify(self, generation: int, key: str, item: object, seq: int = 0) -> None:
        """One image in full: decode (full size, for the screen too), classify with full
        attention capture and hand back ``Shown`` — never a tensor, never a Qt object.
        ``item`` is a path, a web link (``url:`` + link) or image data."""
        if self._stale(generation, seq):
            self.dropped.emit(generation, key)
            return
        if self._clf is None:
            self.failed.emit(generation, key, "no model is loaded yet")
            return
        try:
            from ..core.images import LoadedImage, load_image, to_rgb

            if isinstance(item, str) and item.startswith("url:"):
                loaded = self._web_image(generation, item[4:])
            elif isinstance(item, str):
                # A large JPEG decodes at 1/2–1/8 scale, never smaller than the screen copy
                # (DISPLAY_MAX_SIDE) or what the model's resize keeps: a 24 MP photo costs a
                # fraction of a full decode, and the geometry stays in full-size pixels.
                need = self._clf.preprocessing.resized_size

                def min_size(full: tuple[int, int]) -> tuple[int, int]:
                    w, h = full
                    s = min(1.0, DISPLAY_MAX_SIDE / max(w, h))
                    rw, rh = need(full)
                    return max(rw, round(w * s)), max(rh, round(h * s))

                loaded = load_image(item, max_pixels=self._clf.max_pixels, min_size=min_size)
            elif isinstance(item, LoadedImage):
                loaded = item
            else:
                rgb = to_rgb(item)
                loaded = LoadedImage(rgb, rgb.size, None, key)
            (res,) = self._clf.classify([loaded], top_k=20, attention="full")
            self._tell_notices()
            self._full_runs += 1
            self._detailed[key] = self._full_runs
            self.resultReady.emit(generation, key, Shown(res, display_array(loaded.image), loaded_thumb(loaded)))
        except _Interrupted:
            return
        except Exception as exc:
            self.failed.emit(generation, key, _explain(f"classifying {key} failed", exc))

    def _web_image(self, generation: int, url: str):
        """A dropped web image: fetched once (the person agreed), then kept for re-runs."""
        from ..core.remote import fetch_image

        if url in self._web:
            self._web.move_to_end(url)
            return self._web[url]
        cancelled = self._canceller()
        self.progress.emit(generation, "fetch", 0, 0, "Fetching the web image")
        try:
            loaded = fetch_image(url, max_pixels=self._clf.max_pixels, cancel=cancelled)
        finally:
            self.jobFinished.emit(generation, "fetch", cancelled())
        self._web[url] = loaded
        while len(self._web) > WEB_IMAGES_KEPT:
            self._web.popitem(last=False)
        return loaded

    # -- folders: a queue of jobs, one batch per event-loop turn ----------------------------
    @Slot(int, object)
    def classify_many(self, generation: int, keys: Sequence[str]) -> None:
        """Many files in the background: results (CLS attention and a thumbnail) stream out;
        single-image requests are served between batches; cancel keeps what is done."""
        if not self._jobs:
            self._done, self._total = 0, 0
        self._jobs.append(_Job(generation, list(keys), queued_at=self._full_runs, cancelled=self._canceller()))
        self._total += len(keys)
        if not self._stepping:
            self._stepping = True
            self._step.emit()

    def _inputs(self, job: _Job):
        """Decoded images for the classifier, in order, decoding ahead on two threads (at the
        reduced JPEG scale the model needs); failures are reported here and skipped."""
        from concurrent.futures import ThreadPoolExecutor

        from ..core.images import load_image
        from ..core.results import ImageFailure

        clf = self._clf
        def shown_since(key: str) -> bool:  # run in full after this job was queued
            return self._detailed.get(key, -1) > job.queued_at

        keys = [k for k in job.keys if not shown_since(k)]
        self._done += len(job.keys) - len(keys)

        def decode(path: str):
            loaded = load_image(path, max_pixels=clf.max_pixels, min_size=clf.preprocessing.resized_size)
            return loaded, loaded_thumb(loaded)

        from ..core.devices import decode_workers, lower_thread_priority

        # Like the command line: low-priority decoders that leave torch a core on small machines.
        with ThreadPoolExecutor(max_workers=decode_workers(), thread_name_prefix="folder-decode",
                                initializer=lower_thread_priority) as pool:  # fmt: skip
            ahead: deque = deque()
            it = iter(keys)
            try:
                while True:
                    while len(ahead) < 2 * JOB_BATCH:
                        key = next(it, None)
                        if key is None:
                            break
                        ahead.append((key, pool.submit(decode, key)))
                    if not ahead:
                        return
                    key, fut = ahead.popleft()
                    if shown_since(key):  # shown in full meanwhile
                        self._done += 1
                        continue
                    try:
                        loaded, thumb = fut.result()
                    except Exception as exc:
                        failure = ImageFailure(key, _one_line(exc))
                        self.resultReady.emit(job.generation, key, Shown(failure, None, detailed=False))
                        self._done += 1
                        continue
                    self._thumbs[key] = thumb
                    yield loaded
            finally:
                for _, fut in ahead:
                    fut.cancel()

    @Slot()
    def _run_step(self) -> None:
        job = self._jobs[0] if self._jobs else None
        if job is None:
            self._stepping = False
            return
        if job.cancelled() or self._stale(job.generation) or self._clf is None:
            cancelled = job.cancelled() or self._clf is None
            # A Cancel press stops every run queued before it; a new model, every old run.
            gone = [j for j in self._jobs if self._clf is None or j.cancelled() or self._stale(j.generation)]
            for j in gone:
                if j.it is not None:
                    j.it.close()
                self._jobs.remove(j)
            self.jobFinished.emit(job.generation, "folder", cancelled)
            if self._jobs:
                self._done = self._total = 0
                for j in self._jobs:
                    self._total += len(j.keys)
                self._step.emit()
            else:
                self._stepping = False
            return
        try:
            if job.it is None:
                self._thumbs.clear()
                job.it = self._clf.iter_classify(self._inputs(job), batch_size=JOB_BATCH, top_k=20,
                                                 attention="cls")  # fmt: skip
            for _ in range(JOB_BATCH):
                self._job_cancelled = job.cancelled
                try:
                    res = next(job.it)
                finally:
                    self._job_cancelled = None
                key = res.source
                self._done += 1
                self.resultReady.emit(job.generation, key, Shown(res, None, self._thumbs.pop(key, None),
                                                                 detailed=False))  # fmt: skip
            self._report(job)
            self._tell_notices()
        except _Interrupted:
            self._close_jobs()
            self.jobFinished.emit(job.generation, "folder", True)
            return
        except StopIteration:
            self._report(job)
            self._tell_notices()
            self._jobs.popleft()
            if not self._jobs:
                self._stepping = False
                self.jobFinished.emit(job.generation, "folder", False)
                return
        except Exception as exc:
            log.exception("folder run failed")
            self._close_jobs()
            self.failed.emit(job.generation, "folder", _one_line(exc))
            self.jobFinished.emit(job.generation, "folder", False)
            return
        self._step.emit()

    def _tell_notices(self) -> None:
        """New notices from the classifier (a GPU out of memory, so the CPU took over)."""
        clf = self._clf
        while self._notices_told < len(clf.notices):
            self.notice.emit(clf.notices[self._notices_told], clf.device.type)
            self._notices_told += 1

    def _report(self, job: _Job) -> None:
        text = f"Classifying {self._done} of {self._total}"
        self.progress.emit(job.generation, "folder", self._done, self._total, text)

    def _close_jobs(self) -> None:
        for job in self._jobs:
            if job.it is not None:
                job.it.close()
        self._jobs.clear()
        self._stepping = False

    @Slot(object, object, object, str, float, str)
    def render_overlay(self, key: str, source: object, payload: object, cmap: str, opacity: float,
                       out: str) -> None:  # fmt: skip
        """The overlay at the image's own resolution, decoded here (never on the GUI thread);
        saved to ``out`` as PNG, or handed back for the clipboard when ``out`` is ""."""
        try:
            from ..core.images import LoadedImage, load_image, to_rgb
            from ..core.overlay import blend

            grid, geometry = payload
            if isinstance(source, str) and source.startswith("url:"):
                base = self._web.get(source[4:])
                if base is None:
                    raise ValueError("the web image is no longer in memory; drop its link again")
                base = base.image
            elif isinstance(source, str):
                limits = {"max_pixels": self._clf.max_pixels} if self._clf is not None else {}
                base = load_image(source, **limits).image
            elif isinstance(source, LoadedImage):
                base = source.image
            else:
                base = to_rgb(source)
            img = blend(base, grid, geometry, cmap, opacity)
            if out:
                img.save(out, format="PNG")
                self.overlayRendered.emit(out, None, "")
            else:
                self.overlayRendered.emit("", np.asarray(img), "")
        except Exception as exc:
            log.exception("rendering the overlay of %s failed", key)
            self.overlayRendered.emit(out, None, _one_line(exc))

    @Slot()
    def shutdown(self) -> None:
        self._close_jobs()


def loaded_thumb(loaded) -> np.ndarray:
    return display_array(loaded.image, THUMB_SIDE)


class WorkerThread:
    """Owns the worker and its thread; stops them cleanly on exit."""

    def __init__(self) -> None:
        self.thread = QThread()
        self.thread.setObjectName("inference")
        self.worker = InferenceWorker()
        self.worker.moveToThread(self.thread)
        self.thread.start()

    def stop(self, timeout_ms: int = 2000) -> bool:
        """Cancel what runs (a download or a folder stops within one chunk or batch), let
        the worker close its jobs, and wait for the thread."""
        self.worker.stopping()
        self.thread.quit()
        stopped = self.thread.wait(timeout_ms)
        if stopped:  # the thread is gone: close its half-run jobs (and their decode threads) here
            self.worker.shutdown()
        return stopped
