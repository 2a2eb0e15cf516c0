"""The one worker thread: model loading, classification, folders, class-specific maps
(:mod:`.explain_worker`) — never on the GUI thread.

A ``QObject`` moved to one ``QThread`` and fed through queued signals.  Every request
carries a model generation; the window drops results whose generation is stale (latest
wins).  Long work follows one job contract (:mod:`.jobs`): progress, cancel, finished.
Every slot catches exceptions and emits ``failed`` with one readable line; the traceback
goes to the log.

torch is imported here only inside the slots, on the worker thread, after the window is up.
Keys (file paths) and sources travel as Python objects, never as Qt strings: a file name
that is not valid UTF-8 (kept by Python as surrogate escapes) survives.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from ..core.sources import DataSource, FileSource, WebSource
from ..core.text import one_line
from .explain_worker import ExplainRuns
from .folder_runs import FolderRuns, Interrupted
from .jobs import Cancels, Job, JobKind
from .outcome import Shown, explain
from .pixels import DISPLAY_MAX_SIDE, screen_copy, thumbnail
from .render import drawing
from .teach_worker import TeachRuns

WEB_IMAGES_KEPT = 16  # fetched web images kept (model switches and overlays never refetch)


class InferenceWorker(QObject):
    # (generation, model id, display name, device, notice)
    modelLoaded = Signal(int, object, str, str, str)
    # (generation, key, Shown)
    resultReady = Signal(int, object, object)
    # (key, request number, the sharp pixels.ScreenCopy, or None when skipped or it failed)
    sharpReady = Signal(object, int, object)
    # (generation, what failed: "model", "catalog" or an image key, message)
    failed = Signal(int, object, str)
    # (generation, key) — a full request skipped because a newer one replaced it
    dropped = Signal(int, object)
    # a jobs.JobUpdate: progress and the end of a download, a web fetch or a folder run
    jobUpdate = Signal(object)
    # list of catalog dicts (with "downloaded"), list of (device, available, reason)
    catalogReady = Signal(list, list)
    # (destination path or "", rendered overlay as a uint8 RGB array or None, error or "")
    overlayRendered = Signal(str, object, str)
    # (fast mode on?, why it could not be turned on or "")
    fastState = Signal(bool, str)
    # (generation, patch size, trained (height, width), the (height, width) it runs at now)
    modelShape = Signal(int, int, object, object)
    # (something a person should be told that happened while classifying, the device now)
    notice = Signal(str, str)

    def __init__(self) -> None:
        super().__init__()
        self.clf = None
        self.cancels = Cancels()
        self._want_fast = False
        self._input_size: tuple[int, int] | None = None  # for the next model loaded (None: trained)
        self._lock = threading.Lock()
        self._latest = 0
        self._latest_detail = 0
        self.detailed: dict[object, int] = {}  # key → the full-run count when it was done in full
        self.full_runs = 0
        self._notices_told = 0
        self._web: OrderedDict[str, object] = OrderedDict()  # link → LoadedImage
        self.folders = FolderRuns(self)
        self.explainer = ExplainRuns(self)  # class-specific maps and faithfulness scores
        self.teacher = TeachRuns(self)  # File › New Classifier…: teaching a classifier
        self.view_settings = None  # the window's map settings (a callable): a result's overlay is drawn here

    # -- called from the GUI thread: safe without the event loop -------------------------
    def cancel(self) -> None:
        """Cancel what runs or waits now (a download, a fetch, folder runs)."""
        self.cancels.press()

    def stopping(self) -> None:
        self.cancels.close()

    def bump(self, generation: int) -> None:
        with self._lock:
            self._latest = max(self._latest, generation)

    def bump_detail(self, seq: int) -> None:
        with self._lock:
            self._latest_detail = max(self._latest_detail, seq)

    def stale(self, generation: int, seq: int = 0) -> bool:
        with self._lock:
            # seq 0: always wanted (not part of moving through the gallery)
            return generation < self._latest or (seq != 0 and seq < self._latest_detail)

    def job(self, kind: JobKind, generation: int, job_id: int | None = None, cancelled=None) -> Job:
        return Job(kind, generation, self.cancels, self.jobUpdate.emit, job_id, cancelled)

    # -- model -------------------------------------------------------------------------
    @Slot(int, object, str, bool, object)
    def load_model(self, generation: int, model: str, device: str, allow_download: bool = True,
                   labels: str = "") -> None:  # fmt: skip
        """Load ``model`` ("" = the default: ViT-B/16 when its weights are on disk, else the
        demo).  A download (only when allowed) is a job: progress, Cancel."""
        self.detailed.clear()
        self.full_runs = 0
        job = self.job(JobKind.DOWNLOAD, generation)
        try:
            from ..core.classifier import default_model_id, load_classifier

            model = model or default_model_id()
            names: list[str] = []  # looked up on the first progress only: the catalog imports torchvision

            def progress(done: int, total: int | None) -> None:
                if not names:
                    names.append(_model_name(model))
                if total:
                    text = f"Downloading {names[0]}: {done / 1e6:.0f} of {total / 1e6:.0f} MB"
                    job.progress(int(1000 * done / total), 1000, text)
                else:
                    job.progress(0, 0, f"Downloading {names[0]}: {done / 1e6:.0f} MB")

            clf = load_classifier(model, device=device, progress=progress, cancel=job.cancelled,
                                  allow_download=allow_download, labels=labels or None)  # fmt: skip
            self.folders.watch(clf)
            if self._input_size is not None:
                try:
                    clf.notices.append(clf.set_input_size(self._input_size))
                except Exception as exc:  # the model stays at its trained size, and says why
                    clf.notices.append(one_line(exc))
            if self._want_fast:
                why = clf.set_fast(True)
                if why:
                    clf.notices.append(f"fast mode is not available: {why}")
            self.clf = clf
            self._notices_told = len(clf.notices)  # these go out with modelLoaded
            self.explainer.model_loaded(generation, clf)
        except Exception as exc:  # reported, never swallowed
            _end_download(job)
            self.failed.emit(generation, "model", explain(f"loading {model} failed", exc))
            return
        _end_download(job)
        self.fastState.emit(clf.fast, "")
        pre = clf.preprocessing
        self.modelShape.emit(generation, pre.patch_size, clf.trained_size, pre.input_size)
        note = "; ".join(n for n in clf.notices if n)
        self.modelLoaded.emit(generation, clf.model_id, clf.display_name, clf.device.type, note)

    @Slot(object)
    def want_input_size(self, size: tuple[int, int] | None) -> None:
        """The input size (height, width) the next model loaded runs at; None: its trained size."""
        self._input_size = size

    @Slot(bool)
    def set_fast(self, on: bool) -> None:
        """Fast mode (bfloat16 on CPUs that have it, float16 on a GPU), kept across models."""
        self._want_fast = on
        if self.clf is None:
            return
        try:
            why = self.clf.set_fast(on)
            self.fastState.emit(self.clf.fast, why or "")
        except Exception as exc:
            self.fastState.emit(False, explain("fast mode failed", exc))

    @Slot()
    def describe(self) -> None:
        """The model catalog and the devices, as plain data for the menus."""
        try:
            from ..core import catalog, weights
            from ..core.devices import device_status

            base = catalog.weights_base_url()  # the address a download really uses (a mirror)
            models = [catalog.with_base_url(e, base).to_dict(downloaded=weights.is_downloaded(e))
                      for e in catalog.entries()]  # fmt: skip
            warning = catalog.plain_http_notice()
            for m in models:
                m["warning"] = warning
            devices = [(d.name, d.available, d.reason) for d in device_status()]
            self.catalogReady.emit(models, devices)
        except Exception as exc:
            self.failed.emit(0, "catalog", explain("listing models failed", exc))

    # -- one image in full ---------------------------------------------------------------
    @Slot(int, object, object, int)
    def classify(self, generation: int, key: object, source: object, seq: int = 0) -> None:
        """One image in full: decode at the scale the model needs (a large JPEG as a draft,
        as the command line does), classify with full attention capture and hand back
        ``Shown`` with the screen copy made here — never a tensor.  A draft's sharp copy is
        asked for on its own (:meth:`sharpen`), once the result is on screen."""
        if self.stale(generation, seq):
            self.dropped.emit(generation, key)
            return
        if self.clf is None:
            self.failed.emit(generation, key, "no model is loaded yet")
            return
        try:
            loaded = self._decode(generation, source, key)
            (res,) = self.clf.classify([loaded], top_k=20, attention="full")
            self.explainer.decoded(key, loaded)
            self.tell_notices()
            self.full_runs += 1
            self.detailed[key] = self.full_runs
            shown = Shown(res, screen_copy(loaded.image, draft=_is_draft(loaded)), thumbnail(loaded.image),
                          drawing=drawing(res, self.view_settings))  # fmt: skip
            self.resultReady.emit(generation, key, shown)
        except Interrupted:
            return
        except Exception as exc:
            self.failed.emit(generation, key, explain(f"classifying {key!r} failed", exc))

    def _decode(self, generation: int, source: object, key: object):
        from ..core.images import LoadedImage, load_image, to_rgb

        if isinstance(source, WebSource):
            return self._web_image(generation, source.url)
        if isinstance(source, DataSource):
            rgb = to_rgb(source.image)
            return LoadedImage(rgb, rgb.size, None, str(key))
        if not isinstance(source, FileSource):
            raise TypeError(f"not an image source: {type(source).__name__}")
        # A large JPEG decodes at 1/2–1/8 scale, never smaller than what the model's resize
        # keeps: a 24 MP photo costs a fraction of a full decode, and the geometry stays in
        # full-size pixels.  The result is shown on this draft first; the sharp screen copy
        # follows (:meth:`sharpen`).
        return load_image(source.path, max_pixels=self.clf.max_pixels,
                          min_size=self.clf.preprocessing.resized_size)  # fmt: skip

    @Slot(int, object, object, int)
    def sharpen(self, generation: int, key: object, source: object, seq: int) -> None:
        """The sharp screen copy of a file shown from its draft decode (same picture, same
        original size), skipped when a newer request has replaced this one.  Always
        answers, with None when there is no copy; a failure is logged (the draft stays)."""
        copy = None
        try:
            if isinstance(source, FileSource) and not self.stale(generation, seq):
                from ..core.images import DEFAULT_MAX_PIXELS, fit_within, load_image

                max_pixels = self.clf.max_pixels if self.clf is not None else DEFAULT_MAX_PIXELS
                loaded = load_image(source.path, max_pixels=max_pixels,
                                    min_size=lambda full: fit_within(full, DISPLAY_MAX_SIDE))  # fmt: skip
                copy = screen_copy(loaded.image)
        except Exception as exc:
            explain(f"decoding the sharp picture of {key!r} failed", exc)
        self.sharpReady.emit(key, seq, copy)

    def _web_image(self, generation: int, url: str):
        """A dropped web image: fetched once (the person agreed), then kept for re-runs."""
        from ..core.remote import fetch_image

        if url in self._web:
            self._web.move_to_end(url)
            return self._web[url]
        job = self.job(JobKind.FETCH, generation)
        job.progress(0, 0, "Fetching the web image")
        try:
            loaded = fetch_image(url, max_pixels=self.clf.max_pixels, cancel=job.cancelled)
        finally:
            job.finish(cancelled=job.cancelled())
        self._web[url] = loaded
        while len(self._web) > WEB_IMAGES_KEPT:
            self._web.popitem(last=False)
        return loaded

    # -- folders ---------------------------------------------------------------------------
    @Slot(int, object, int, object)
    def classify_many(self, generation: int, keys: list, job_id: int, cancelled: object) -> None:
        """Many files in the background as job ``job_id`` (see :class:`FolderRuns`);
        ``cancelled`` is the cancel check the window took when it asked."""
        self.folders.add(generation, keys, job_id, cancelled)

    def tell_notices(self) -> None:
        """New notices from the classifier (a GPU out of memory, so the CPU took over)."""
        clf = self.clf
        while self._notices_told < len(clf.notices):
            self.notice.emit(clf.notices[self._notices_told], clf.device.type)
            self._notices_told += 1

    # -- overlays for saving ----------------------------------------------------------------
    @Slot(object, object, object, str, float, str)
    def render_overlay(self, key: object, source: object, payload: object, cmap: str, opacity: float,
                       out: str) -> None:  # fmt: skip
        """The overlay at the image's own resolution, decoded here (never on the GUI thread);
        saved to ``out`` as PNG, or handed back for the clipboard when ``out`` is ""."""
        try:
            from ..core.images import to_rgb
            from ..core.overlay import render_on_original, save_png

            grid, geometry = payload
            if isinstance(source, WebSource):
                kept = self._web.get(source.url)
                if kept is None:
                    raise ValueError("the web image is no longer in memory; drop its link again")
                base = kept.image
            elif isinstance(source, DataSource):
                base = to_rgb(source.image)
            else:
                base = source.path
            max_pixels = self.clf.max_pixels if self.clf is not None else None
            img = render_on_original(base, grid, geometry, cmap, opacity, max_pixels=max_pixels)
            if out:
                save_png(img, out)
                self.overlayRendered.emit(out, None, "")
            else:
                self.overlayRendered.emit("", np.asarray(img), "")
        except Exception as exc:
            self.overlayRendered.emit(out, None, explain(f"rendering the overlay of {key!r} failed", exc))

    @Slot()
    def shutdown(self) -> None:
        self.folders.close_all(silent=True)


def _is_draft(loaded) -> bool:
    """Decoded smaller than its screen copy would be: a sharp copy is worth decoding."""
    from ..core.images import fit_within

    return loaded.reduced and max(loaded.image.size) < max(fit_within(loaded.original_size, DISPLAY_MAX_SIDE))


def _end_download(job: Job) -> None:
    """Only a download that started says that it ended (before the model's own news)."""
    if job.state.done or job.state.text:
        job.finish(cancelled=job.cancelled())


def _model_name(model: str) -> str:
    """A model's name for a progress line (a catalog entry's display name, or a file's)."""
    from ..core import catalog
    from ..core.loading import looks_like_path

    if looks_like_path(model):
        return os.path.basename(model)
    try:
        return catalog.get(model).display_name
    except Exception:
        return model


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
