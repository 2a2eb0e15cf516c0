"""Preprocessing that returns the tensor *and* the way back to the original pixels.

Two modes, both described by data carried in each catalog entry:

* ``resize_crop``: torchvision's ``ImageClassification`` (resize the shorter side, centre
  crop, scale to [0, 1], normalise) — reproduced with Pillow so that the pixels are the
  same as ``weights.transforms()`` on a PIL image;
* ``letterbox``: scale the longer side to the input size and pad the rest with the mean
  colour (the demo model: a shape near the edge of a 2:1 photo must not be cropped away);
* ``squash``: resize both sides to ``resize_size`` (for a square input; the input's shape
  otherwise) whatever the aspect ratio, then centre-crop — Hugging Face's image processors
  and timm's ``crop_mode="squash"``.

The :class:`Geometry` maps model-input pixels and patches back to the original image, so
every overlay lands on the right pixels whatever the aspect ratio.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


#: The bounds :class:`Preprocessing` accepts: input sides, the resize before the crop, the
#: smallest standard deviation (a smaller one turns every input into infinities).
MAX_INPUT_SIDE = 4096
MAX_RESIZE = 8192
MIN_STD = 1e-6

MODES = ("resize_crop", "letterbox", "squash")


def _whole(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _finite(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input; part of every catalog entry."""

    input_size: tuple[int, int]  # (height, width) of the model input
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "resize_crop"  # or "letterbox", "squash"
    resize_size: int | None = None  # shorter side before the crop (resize_crop, squash)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # Checked here so that no path (a catalog entry, a checkpoint's settings, a test) can
        # build one that fails later, one image at a time: a 60,000-px resize, a zero patch.
        size = self.input_size
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(_whole(v) for v in size)):
            raise ValueError(f"input size must be two whole numbers (height, width), not {size!r:.40}")
        h, w = int(size[0]), int(size[1])
        if not (1 <= h <= MAX_INPUT_SIDE and 1 <= w <= MAX_INPUT_SIDE):
            raise ValueError(f"input size {w}×{h} px is outside 1…{MAX_INPUT_SIDE} px per side")
        if not _whole(self.patch_size) or self.patch_size < 1:
            raise ValueError(f"patch size must be a whole number of at least 1, not {self.patch_size!r:.40}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {w}×{h} is not a whole number of {self.patch_size}-px patches")
        stats = {}
        for key in ("mean", "std"):
            v = getattr(self, key)
            if not (isinstance(v, (tuple, list)) and len(v) == 3 and all(_finite(x) for x in v)):
                raise ValueError(f"{key} must be three finite numbers, not {v!r:.40}")
            stats[key] = tuple(float(x) for x in v)
        if min(stats["std"]) < MIN_STD:
            raise ValueError(f"std values must be positive (at least {MIN_STD:g}), not {stats['std']}")
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(f"unknown preprocessing mode {self.mode!r:.40} ({', '.join(MODES)})")
        if not isinstance(self.interpolation, str) or self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r:.40} ({', '.join(_RESAMPLE)})")
        r = self.resize_size
        if r is not None and not (_whole(r) and min(h, w) <= r <= MAX_RESIZE):
            raise ValueError(f"resize size {r!r:.40} is outside {min(h, w)}…{MAX_RESIZE} px (input {w}×{h})")
        object.__setattr__(self, "input_size", (h, w))
        object.__setattr__(self, "patch_size", int(self.patch_size))
        object.__setattr__(self, "mean", stats["mean"])
        object.__setattr__(self, "std", stats["std"])
        if r is not None:
            object.__setattr__(self, "resize_size", int(r))

    @property
    def patch_grid(self) -> tuple[int, int]:
        h, w = self.input_size
        return h // self.patch_size, w // self.patch_size

    def resized_size(self, original: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the original is resized to before the crop or pad."""
        w, h = original
        in_h, in_w = self.input_size
        if self.mode == "letterbox":
            s = min(in_w / w, in_h / h)
            return max(1, round(w * s)), max(1, round(h * s))
        short = self.resize_size or min(in_h, in_w)
        if self.mode == "squash":
            s = short / min(in_h, in_w)
            return max(1, round(in_w * s)), max(1, round(in_h * s))
        # torchvision's rule: the shorter side becomes ``short``, the longer is truncated.
        if w <= h:
            return short, int(short * h / w)
        return int(short * w / h), short

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "input_size": list(self.input_size),
            "resize_size": self.resize_size,
            "patch_size": self.patch_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


def parse_input_size(text: str) -> tuple[int, int] | None:
    """``"384"`` → (384, 384); ``"384x256"`` (width × height, as people write sizes) →
    (256, 384) as (height, width); None when ``text`` is not one or two whole numbers."""
    parts = text.strip().lower().replace("×", "x").split("x")
    if not 1 <= len(parts) <= 2 or not all(p.strip().isdigit() for p in parts):
        return None
    nums = [int(p) for p in parts]
    return (nums[0], nums[0]) if len(nums) == 1 else (nums[1], nums[0])


@dataclass(frozen=True)
class Geometry:
    """The mapping between one original image and the model input made from it."""

    original_size: tuple[int, int]  # (width, height), full resolution, upright
    input_size: tuple[int, int]  # (width, height) of the model input
    scale: tuple[float, float]  # resized / original, per axis
    offset: tuple[int, int]  # input (0, 0) sits at this point of the resized image
    patch_size: int  # in model-input pixels
    patch_grid: tuple[int, int] = field(default=(0, 0))  # (rows, cols)

    @property
    def crop_box(self) -> tuple[float, float, float, float]:
        """What the model saw, in original pixels (left, top, right, bottom).

        Extends past the image where the input was padded (letterbox)."""
        sx, sy = self.scale
        ox, oy = self.offset
        iw, ih = self.input_size
        return (ox / sx, oy / sy, (ox + iw) / sx, (oy + ih) / sy)

    @property
    def visible_box(self) -> tuple[float, float, float, float]:
        """The crop box clipped to the image: the original pixels the model saw."""
        left, top, right, bottom = self.crop_box
        w, h = self.original_size
        return (max(0.0, left), max(0.0, top), min(float(w), right), min(float(h), bottom))

    @property
    def patch_size_original(self) -> tuple[float, float]:
        """(width, height) of one patch in original pixels."""
        return self.patch_size / self.scale[0], self.patch_size / self.scale[1]

    def input_to_original(self, x: float, y: float) -> tuple[float, float]:
        return (x + self.offset[0]) / self.scale[0], (y + self.offset[1]) / self.scale[1]

    def original_to_input(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale[0] - self.offset[0], y * self.scale[1] - self.offset[1]

    def patch_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        p = self.patch_size
        x0, y0 = self.input_to_original(col * p, row * p)
        x1, y1 = self.input_to_original((col + 1) * p, (row + 1) * p)
        return x0, y0, x1, y1

    def patch_center(self, row: int, col: int) -> tuple[float, float]:
        p = self.patch_size
        return self.input_to_original((col + 0.5) * p, (row + 0.5) * p)

    def patch_at(self, x: float, y: float) -> tuple[int, int] | None:
        """The (row, col) of the patch over original pixel (x, y), or None outside the input."""
        ix, iy = self.original_to_input(x, y)
        rows, cols = self.patch_grid
        r, c = int(np.floor(iy / self.patch_size)), int(np.floor(ix / self.patch_size))
        if 0 <= r < rows and 0 <= c < cols:
            return r, c
        return None


def _window(arr8: np.ndarray, pre: Preprocessing, offset: tuple[int, int], size: tuple[int, int],
            exact_fit: bool) -> np.ndarray:  # fmt: skip
    """The model's input window over the resized image: a crop, or padding at the mean."""
    if exact_fit:
        return arr8
    (ox, oy), (in_w, in_h) = offset, size
    rh, rw = arr8.shape[:2]
    fill = np.clip(np.round(np.asarray(pre.mean) * 255.0), 0, 255).astype(np.uint8)
    canvas = np.empty((in_h, in_w, 3), np.uint8)
    canvas[:] = fill
    # Intersection of the resized image with the input window.
    sx0, sy0 = max(ox, 0), max(oy, 0)
    sx1, sy1 = min(ox + in_w, rw), min(oy + in_h, rh)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox] = arr8[sy0:sy1, sx0:sx1]
    return canvas


#: Resized sizes beyond this many input areas are resized only where the crop keeps them.
HUGE_RESIZE = 64


def prepare(
    image: Image.Image,
    pre: Preprocessing,
    original_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, Geometry]:
    """Resize/crop or pad ``image`` (RGB) for the model.

    Returns a float32 (3, H, W) array, normalised, and its geometry.  ``original_size``
    is the full-resolution size when ``image`` was decoded at a reduced scale.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    original = original_size or image.size
    rw, rh = pre.resized_size(original)
    in_h, in_w = pre.input_size
    if pre.mode == "letterbox":
        ox, oy = -((in_w - rw) // 2), -((in_h - rh) // 2)
    else:
        ox, oy = int(round((rw - in_w) / 2.0)), int(round((rh - in_h) / 2.0))
    exact_fit = (ox, oy) == (0, 0) and (rw, rh) == (in_w, in_h)
    inside = ox >= 0 and oy >= 0 and ox + in_w <= rw and oy + in_h <= rh
    if pre.mode != "letterbox" and inside and rw * rh > HUGE_RESIZE * in_w * in_h:
        # An extreme aspect ratio (a 1×60,000 strip) would resize to gigabytes before the
        # crop: resize only the part the crop keeps; the geometry is the same.
        fx, fy = image.width / rw, image.height / rh
        box = (ox * fx, oy * fy, (ox + in_w) * fx, (oy + in_h) * fy)
        canvas = np.asarray(image.resize((in_w, in_h), _RESAMPLE[pre.interpolation], box=box))
        exact_fit = True
    else:
        resized = image if image.size == (rw, rh) else image.resize((rw, rh), _RESAMPLE[pre.interpolation])
        canvas = _window(np.asarray(resized), pre, (ox, oy), (in_w, in_h), exact_fit)
    x = canvas.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(pre.mean, np.float32)
    x /= np.asarray(pre.std, np.float32)
    if not exact_fit and pre.mode == "letterbox":
        # Pad exactly at the mean (0 after normalisation), not at its 8-bit rounding.
        pad = np.ones((in_h, in_w), bool)
        x0, y0 = -ox, -oy
        pad[max(y0, 0) : y0 + rh, max(x0, 0) : x0 + rw] = False
        x[pad] = 0.0
    geom = Geometry(
        original_size=(int(original[0]), int(original[1])),
        input_size=(in_w, in_h),
        scale=(rw / original[0], rh / original[1]),
        offset=(ox, oy),
        patch_size=pre.patch_size,
        patch_grid=pre.patch_grid,
    )
    return np.ascontiguousarray(x.transpose(2, 0, 1)), geom
