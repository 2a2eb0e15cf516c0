"""The one worker thread: model loading, classification, folders — never on the GUI thread.

A ``QObject`` moved to one ``QThread`` and fed through queued signals.  Every request
carries a generation number; the window drops results whose generation is stale (latest
wins).  Long jobs check a cancel flag between steps.  Every slot catches exceptions and
emits ``failed`` with one readable line; the traceback goes to the log.

torch is imported here only inside the slots, on the worker thread, after the window is up.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from ..logs import get_logger

log = get_logger("worker")


def _one_line(exc: BaseException) -> str:
    from ..core.errors import VitDesktopError

    if isinstance(exc, VitDesktopError):
        return exc.one_line()
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


DISPLAY_MAX_SIDE = 2560


@dataclass(frozen=True)
class Shown:
    result: object  # ClassificationResult | ImageFailure
    display: np.ndarray | None  # uint8 RGB, at most DISPLAY_MAX_SIDE on its longer side


def display_array(img) -> np.ndarray:
    view = img.copy()
    view.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
    return np.asarray(view)


class InferenceWorker(QObject):
    # (generation, model id, display name, device, notice)
    modelLoaded = Signal(int, str, str, str, str)
    # (generation, key, ClassificationResult | ImageFailure)
    resultReady = Signal(int, str, object)
    # (generation, what failed, message)
    failed = Signal(int, str, str)
    # (generation, done, total, label)
    progress = Signal(int, int, int, str)
    # (generation, what finished, cancelled)
    jobFinished = Signal(int, str, bool)
    # list of catalog dicts (with "downloaded"), list of (device, available, reason)
    catalogReady = Signal(list, list)

    def __init__(self) -> None:
        super().__init__()
        self._clf = None
        self._cancel = threading.Event()
        self._latest = 0
        self._lock = threading.Lock()

    # Called from the GUI thread: safe without the event loop.
    def cancel(self) -> None:
        self._cancel.set()

    def bump(self, generation: int) -> None:
        with self._lock:
            self._latest = max(self._latest, generation)

    def _stale(self, generation: int) -> bool:
        with self._lock:
            return generation < self._latest

    @Slot(int, str, str)
    def load_model(self, generation: int, model: str, device: str) -> None:
        self._cancel.clear()
        try:
            from ..core.classifier import load_classifier

            def progress(done: int, total: int | None) -> None:
                self.progress.emit(generation, done, total or 0, "downloading")

            clf = load_classifier(model, device=device, progress=progress, cancel=self._cancel.is_set)
            self._clf = clf
            note = "; ".join(clf.notices)
            self.modelLoaded.emit(generation, clf.model_id, clf.display_name, clf.device.type, note)
        except Exception as exc:  # reported, never swallowed
            log.exception("loading %s failed", model)
            self.failed.emit(generation, "model", _one_line(exc))

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

    @Slot(int, str, object)
    def classify(self, generation: int, key: str, item: object) -> None:
        """Decode (full size, for the screen too), classify with full attention capture and
        hand back ``Shown`` — never a tensor, never a Qt object."""
        if self._stale(generation):
            return
        if self._clf is None:
            self.failed.emit(generation, key, "no model is loaded yet")
            return
        try:
            from ..core.images import LoadedImage, load_image, to_rgb

            if isinstance(item, str):
                loaded = load_image(item, max_pixels=self._clf.max_pixels)
            else:
                rgb = to_rgb(item)
                loaded = LoadedImage(rgb, rgb.size, None, key)
            (res,) = self._clf.classify([loaded], top_k=20, attention="full")
            self.resultReady.emit(generation, key, Shown(res, display_array(loaded.image)))
        except Exception as exc:
            log.exception("classifying %s failed", key)
            self.failed.emit(generation, key, _one_line(exc))

    @Slot(int, list)
    def classify_many(self, generation: int, paths: Sequence[str]) -> None:
        """A folder in the background: results stream out; cancel keeps what is done."""
        self._cancel.clear()
        if self._clf is None:
            self.failed.emit(generation, "folder", "no model is loaded yet")
            return
        total = len(paths)
        done = 0
        try:
            it = self._clf.iter_classify(paths, batch_size=8, top_k=20, attention="full",
                                         cancel=self._cancel.is_set)  # fmt: skip
            for res in it:
                done += 1
                self.resultReady.emit(generation, res.source, Shown(res, None))
                self.progress.emit(generation, done, total, "classifying")
        except Exception as exc:
            log.exception("folder run failed")
            self.failed.emit(generation, "folder", _one_line(exc))
        self.jobFinished.emit(generation, "folder", self._cancel.is_set())


class WorkerThread:
    """Owns the worker and its thread; stops them cleanly on exit."""

    def __init__(self) -> None:
        self.thread = QThread()
        self.thread.setObjectName("inference")
        self.worker = InferenceWorker()
        self.worker.moveToThread(self.thread)
        self.thread.start()

    def stop(self, timeout_ms: int = 2000) -> bool:
        self.worker.cancel()
        self.thread.quit()
        return self.thread.wait(timeout_ms)
