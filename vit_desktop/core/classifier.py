"""Load a model and classify images with one forward pass that also captures attention.

Finding and building the model is :mod:`.loading`'s job (:func:`.loading.load_model`);
:func:`load_classifier` puts what it returns on a device, and ``default_model_id`` is
re-exported from there."""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import catalog, maps, weights
from .capture import AttentionCapture, token_layout
from .devices import (
    decode_workers,
    fast_dtype,
    free_device_memory,
    is_out_of_memory,
    limit_numpy_blas_threads,
    lower_thread_priority,
    resolve_device,
)
from .errors import CheckpointError, DeviceError, ImageLoadError
from .images import DEFAULT_MAX_PIXELS, LoadedImage, load_image
from .loading import default_model_id, load_model
from .preprocess import Geometry, Preprocessing, prepare
from .resizing import resize_model
from .results import AttentionResult, ClassificationResult, ImageFailure, Prediction
from .text import short_name

ImageInput = str | os.PathLike[str] | Image.Image | LoadedImage
Outcome = ClassificationResult | ImageFailure
ATTENTION_MODES = ("none", "peak", "cls", "full")

#: Images per forward pass in folder mode: at 4–8 images ViT-B/16's matrix multiplies run
#: near the machine's GEMM speed on a CPU (one image at a time reaches ~75% of it); more
#: only adds latency and memory (bench/RESULTS.md, ``gemm_efficiency``).
FOLDER_BATCH = 8

#: What fast mode trades, in words for a menu tooltip or ``--help``.
FAST_MODE_TRADE = (
    "Fast mode runs the model in bfloat16 on CPUs with bfloat16 instructions (float16 on a GPU): "
    "about twice as fast, but probabilities differ slightly from float32 and a near-tie can "
    "change the top class; the model takes 50% more memory while it is on. Off by default."
)


@dataclass(frozen=True)
class Prepared:
    source: str
    array: np.ndarray  # (3, H, W) float32
    geometry: Geometry
    prep_ms: float


def _attention_mode(attention: bool | str) -> str:
    if attention is True:
        return "full"
    if attention is False or attention is None:
        return "none"
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}")
    return attention


class Classifier:
    """A model in eval mode on one device, with its preprocessing and labels."""

    def __init__(self, module: nn.Module, preprocessing: Preprocessing, labels: Sequence[str],
                 model_id: str, display_name: str, device: torch.device,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:  # fmt: skip
        self.module = module.eval()
        self.preprocessing = preprocessing
        self.trained_size = preprocessing.input_size  # (height, width) the weights were trained at
        self.labels = tuple(labels)
        self.model_id = model_id
        self.display_name = display_name
        self.device = device
        self.max_pixels = max_pixels
        self.notices: list[str] = []  # things a person should be told (e.g. a CPU fallback)
        self.dtype = torch.float32  # what the model computes in: float32, or fast mode's dtype
        self._fast_module: nn.Module | None = None  # a low-precision copy while fast mode is on
        self.module.to(device)

    # -- fast mode -----------------------------------------------------------------------
    @property
    def fast(self) -> bool:
        """Whether fast mode (low-precision compute) is on."""
        return self._fast_module is not None

    def fast_unavailable_reason(self) -> str | None:
        """None when fast mode can be used on this device, else one sentence saying why not."""
        dtype, why = fast_dtype(self.device)
        return None if dtype is not None else why

    def set_fast(self, on: bool) -> str | None:
        """Turn fast mode on or off; returns None when done, or why it is not available here
        (then the classifier stays in float32).

        On: a copy of the model cast to bfloat16 (CPU with native bfloat16) or float16 (GPU)
        runs every later forward pass; the float32 model is kept, so turning it off gives
        exactly the float32 results again.  Captured CLS rows stay float32."""
        if not on:
            self._fast_module = None
            self.dtype = torch.float32
            return None
        dtype, why = fast_dtype(self.device)
        if dtype is None:
            self._fast_module = None
            self.dtype = torch.float32
            return why
        if self._fast_module is None or self.dtype != dtype:
            self._fast_module = copy.deepcopy(self.module).to(self.device, dtype=dtype).eval()
            self.dtype = dtype
        return None

    @property
    def active_module(self) -> nn.Module:
        """The module that runs: the float32 model, or its fast-mode copy."""
        return self._fast_module if self._fast_module is not None else self.module

    # -- input ---------------------------------------------------------------------------
    def set_input_size(self, size: tuple[int, int]) -> str:
        """Run at ``size`` (height, width) px from now on (:func:`.resizing.resize_model`);
        returns the sentence to tell the person (accuracy may change)."""
        pre = resize_model(self.module, self.preprocessing, size, self.display_name)
        if pre is self.preprocessing:
            return ""
        self.preprocessing = pre
        if self._fast_module is not None:  # the low-precision copy has the old positions
            self._fast_module = None
            self.set_fast(True)
        (h, w), (th, tw) = pre.input_size, self.trained_size
        if (h, w) == (th, tw):
            return f"{self.display_name} runs at its trained size, {w}×{h} px"
        return f"{self.display_name} now runs at {w}×{h} px (trained at {tw}×{th} px): accuracy may change"

    def prepare(self, item: ImageInput, source: str | None = None,
                on_decoded: Callable[[LoadedImage], None] | None = None) -> Prepared:  # fmt: skip
        """Decode (for a path) and preprocess one image; ``on_decoded`` sees a file's decoded
        image first (the window makes its thumbnail there, on the same decode thread)."""
        t0 = time.perf_counter()
        if isinstance(item, LoadedImage):
            img, original, src = item.image, item.original_size, item.source
        elif isinstance(item, Image.Image):
            from .images import to_rgb

            img, original, src = to_rgb(item), item.size, source or "<image>"
        else:
            src = os.fspath(item)
            # A large JPEG may decode at 1/2–1/8 scale, never below what the resize keeps.
            loaded = load_image(src, max_pixels=self.max_pixels, min_size=self.preprocessing.resized_size)
            if on_decoded is not None:
                on_decoded(loaded)
            img, original = loaded.image, loaded.original_size
        arr, geom = prepare(img, self.preprocessing, original)
        return Prepared(source or src, arr, geom, (time.perf_counter() - t0) * 1000)

    # -- forward -------------------------------------------------------------------------
    def _forward(self, batch: torch.Tensor, mode: str):
        with torch.inference_mode():
            module = self.active_module
            x = batch.to(self.device, dtype=self.dtype, non_blocking=True)
            if mode == "none":
                logits = module(x)
                return logits.float().cpu(), None
            keep_qk = mode == "full" or (mode == "peak" and maps.DEFAULT_MAP.kind == "rollout")
            with AttentionCapture(module, keep_qk=keep_qk) as cap:
                logits = module(x)
            return logits.float().cpu(), cap.collect()

    def forward(self, batch: torch.Tensor, mode: str = "full"):
        """Logits (and attention) for a preprocessed batch; falls back to the CPU on GPU OOM."""
        try:
            return self._forward(batch, mode)
        except Exception as exc:
            if not is_out_of_memory(exc) or self.device.type == "cpu":
                if is_out_of_memory(exc):
                    raise DeviceError("out of memory on the CPU; try a smaller batch or model") from None
                raise
            was_fast = self.fast
            self._fast_module = None
            free_device_memory(self.device)
            old = self.device
            self.device = torch.device("cpu")
            self.module.to(self.device)
            self.notices.append(f"{old.type.upper()} ran out of memory; switched to the CPU")
            if was_fast:
                why = self.set_fast(True)
                if why:
                    self.notices.append(f"fast mode is off: {why}")
            else:
                self.dtype = torch.float32
            return self._forward(batch, mode)

    # -- results -------------------------------------------------------------------------
    def _results(self, items: Sequence[Prepared], mode: str, top_k: int) -> list[Outcome]:
        t0 = time.perf_counter()
        batch = torch.from_numpy(np.stack([p.array for p in items]))
        logits, att = self.forward(batch, mode)
        fwd_ms = (time.perf_counter() - t0) * 1000 / len(items)
        probs = torch.softmax(logits, dim=-1).numpy()
        k = max(1, min(top_k, probs.shape[1]))
        out = []
        for i, p in enumerate(items):
            if not np.isfinite(probs[i]).all():  # never a NaN in the JSON or on screen
                out.append(ImageFailure(p.source, f"{os.path.basename(p.source) or p.source}: the model's output "
                                        "is not a number for this image (NaN or infinite); its weights may be "
                                        "broken"))  # fmt: skip
                continue
            order = np.argsort(-probs[i], kind="stable")[:k]
            preds = tuple(Prediction(self._label(j), int(j), float(probs[i, j])) for j in order)
            attention, peak = None, None
            layout = token_layout(self.active_module)
            if att is not None:
                cls, q, kk = att
                attention = AttentionResult(
                    cls=cls[i],
                    q=q[i] if q is not None else None,
                    k=kk[i] if kk is not None else None,
                    grid=p.geometry.patch_grid,
                    layout=layout,
                )
                peak = default_peak(attention, p.geometry)
                if mode == "peak":
                    attention = None
            out.append(
                ClassificationResult(
                    source=p.source,
                    model_id=self.model_id,
                    device=self.device.type,
                    top_k=preds,
                    probs=probs[i].astype(np.float32),
                    geometry=p.geometry,
                    latency_ms=p.prep_ms + fwd_ms,
                    attention=attention,
                    attention_peak=peak,
                )
            )
        return out

    def _label(self, j: int) -> str:
        return self.labels[j] if j < len(self.labels) else f"class {j}"

    def classify(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5,
                 attention: bool | str = True) -> list[Outcome]:  # fmt: skip
        """Classify one or more images in one batch; a bad image gives an ImageFailure."""
        if isinstance(images, (str, os.PathLike, Image.Image, LoadedImage)):
            images = [images]
        mode = _attention_mode(attention)
        prepared: list[Prepared | ImageFailure] = []
        for item in images:
            try:
                prepared.append(self.prepare(item))
            except (ImageLoadError, MemoryError) as exc:
                prepared.append(_failure(item, exc))
        good = [p for p in prepared if isinstance(p, Prepared)]
        results = iter(self._results(good, mode, top_k) if good else [])
        return [next(results) if isinstance(p, Prepared) else p for p in prepared]

    def iter_classify(self, paths: Iterable[ImageInput], batch_size: int = FOLDER_BATCH, top_k: int = 5,
                      attention: bool | str = "none", cancel: Callable[[], bool] | None = None,
                      workers: int | None = None,
                      on_decoded: Callable[[LoadedImage], None] | None = None) -> Iterator[Outcome]:  # fmt: skip
        """Classify many images in input order, decoded on :func:`iter_prepared`'s pool while
        the model runs; failures are yielded as :class:`ImageFailure` and the rest go on.
        ``on_decoded`` is called on the decode thread with each file's decoded image."""
        mode = _attention_mode(attention)
        prep = functools.partial(self.prepare, source=None, on_decoded=on_decoded)
        for done in iter_prepared(paths, prep, batch_size, cancel, workers):
            good = [p for p in done if isinstance(p, Prepared)]
            results = iter(self._results(good, mode, top_k) if good else [])
            for p in done:
                yield next(results) if isinstance(p, Prepared) else p


def iter_prepared(items: Iterable, prepare: Callable[[object], Prepared], batch_size: int = FOLDER_BATCH,
                  cancel: Callable[[], bool] | None = None,
                  workers: int | None = None) -> Iterator[list[Prepared | ImageFailure]]:  # fmt: skip
    """``prepare(item)`` for every item on a pool of low-priority decode threads, a few batches
    ahead, yielded in input order as lists of ``batch_size`` (an item that could not be
    prepared as an :class:`ImageFailure`); ``cancel`` is checked between batches."""
    workers = workers or decode_workers()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode",
                            initializer=lower_thread_priority) as pool:  # fmt: skip
        pending = []
        it = iter(items)
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(pending) < 2 * batch_size + workers:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    return
                pending.append((item, pool.submit(prepare, item)))

        try:
            fill()
            while pending:
                if cancel is not None and cancel():
                    return
                chunk, pending[:] = pending[:batch_size], pending[batch_size:]
                fill()
                done: list[Prepared | ImageFailure] = []
                for item, fut in chunk:
                    try:
                        done.append(fut.result())
                    except (ImageLoadError, MemoryError) as exc:
                        done.append(_failure(item, exc))
                yield done
        finally:  # cancelled, closed or failed: decodes not started yet never start
            for _, fut in pending:
                fut.cancel()


def _failure(item: ImageInput, exc: Exception) -> ImageFailure:
    """One image that could not be prepared; the others go on."""
    source = _source_of(item)
    if isinstance(exc, ImageLoadError):
        return ImageFailure(source, exc.one_line())
    return ImageFailure(
        source, f"{short_name(source)}: not enough memory to prepare this image for the model"
    )


def _source_of(item: ImageInput) -> str:
    if isinstance(item, LoadedImage):
        return item.source
    if isinstance(item, Image.Image):
        return "<image>"
    return os.fspath(item)


def default_peak(att: AttentionResult, geom: Geometry) -> tuple[float, float]:
    """Where the default map peaks, in original pixels (the centre of the peak patch)."""
    spec = maps.DEFAULT_MAP
    if spec.kind == "rollout" and att.q is None:
        spec = maps.MapSpec(kind="cls", fusion=spec.fusion)
    r, c = maps.peak_cell(maps.compute(att, spec))
    return geom.patch_center(r, c)


# -- loading (finding and building the model is .loading's job) ------------------------------


def load_classifier(model: str | os.PathLike[str] | catalog.ModelEntry = catalog.DEMO_ID,
                    device: str = "auto", *, pretrained: bool = True,
                    progress: weights.Progress | None = None,
                    cancel: weights.Cancel | None = None, allow_download: bool = True,
                    max_pixels: int = DEFAULT_MAX_PIXELS, fast: bool = False,
                    labels: str | os.PathLike[str] | None = None,
                    input_size: tuple[int, int] | None = None) -> Classifier:  # fmt: skip
    """A ready classifier for a catalog id, a catalog entry or a checkpoint path
    (:func:`.loading.load_model`) on ``device``.

    ``pretrained=False`` builds the architecture with random weights (speed figures).
    ``labels``: a labels file for a checkpoint (instead of the ones next to it).
    ``input_size``: (height, width) to run at instead of the trained size
    (:meth:`Classifier.set_input_size`; an :class:`.resizing.InputSizeError` if it cannot).
    ``fast=True`` turns fast mode on (see :meth:`Classifier.set_fast`); where it is not
    available the classifier stays in float32 and says why in ``notices``."""
    limit_numpy_blas_threads()  # map maths stay off the cores torch is using
    dev = resolve_device(device)  # an unusable device is refused before any download
    loaded = load_model(model, pretrained=pretrained, progress=progress, cancel=cancel,
                        allow_download=allow_download, labels=labels)  # fmt: skip
    clf = Classifier(loaded.module, loaded.preprocessing, loaded.labels, loaded.model_id,
                     loaded.display_name, dev, max_pixels)  # fmt: skip
    if input_size is not None:  # before fast mode: its low-precision copy is made at this size
        note = clf.set_input_size(input_size)
        if note:
            clf.notices.append(note)
    if fast:
        why = clf.set_fast(True)
        if why:
            clf.notices.append(f"fast mode is off: {why}")
    return clf


__all__ = [
    "FAST_MODE_TRADE",
    "FOLDER_BATCH",
    "Classifier",
    "CheckpointError",
    "default_model_id",
    "default_peak",
    "load_classifier",
]
