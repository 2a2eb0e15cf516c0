"""Pixels for the screen, made on the worker thread: the screen copy (QImages: they may be
built off the GUI thread, QPixmaps may not) and the thumbnail (a numpy array).

Made in steps that let the GUI thread run meanwhile: Pillow and numpy release Python's lock
while they work, Qt's own conversions and scaling do not (converting a 2560-px copy with
``QImage.convertToFormat`` would stall the window for ~10 ms)."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage

from ..core.images import fit_within

DISPLAY_MAX_SIDE = 2560
THUMB_SIDE = 96
LEVEL_MIN_SIDE = 200  # the smallest level of a screen copy (its longer side, about)
BAND = 128  # rows copied out of Pillow at a time (each copy holds Python's lock)


def display_image(img: Image.Image, side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """``img`` at most ``side`` pixels long, shrunk with a fast reducing resize (a 6000-px
    photo in ~20 ms, not ~100 with ``thumbnail``)."""
    size = fit_within(img.size, side)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def display_array(img: Image.Image, side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    return np.asarray(display_image(img, side))


def thumbnail(img: Image.Image) -> np.ndarray:
    return display_array(img, THUMB_SIDE)


class ScreenCopy:
    """The picture on screen: the copy itself (at most DISPLAY_MAX_SIDE long, in the
    painter's own 32-bit format, so nothing is converted on the GUI thread) and its
    halvings down to about LEVEL_MIN_SIDE.  The view draws the smallest level at least as
    large as the picture on screen, so the GUI thread never shrinks the full copy.

    ``draft``: made from a decode at the model's reduced scale; the sharp copy follows and
    takes its place (same original size, so nothing drawn over it moves)."""

    __slots__ = ("levels", "draft")

    def __init__(self, levels: tuple[QImage, ...], draft: bool = False) -> None:
        self.levels = levels  # largest first
        self.draft = draft

    def width(self) -> int:
        return self.levels[0].width()

    def height(self) -> int:
        return self.levels[0].height()

    def level_for(self, width: float) -> QImage:
        """The smallest level at least ``width`` pixels wide (the largest when none is)."""
        for img in reversed(self.levels):
            if img.width() >= width:
                return img
        return self.levels[0]


def screen_copy(img: Image.Image, draft: bool = False, side: int = DISPLAY_MAX_SIDE) -> ScreenCopy:
    """The screen copy of an RGB image, with its levels (call it on the worker thread).
    Each level is the one above halved (2 × 2 pixels averaged)."""
    level = display_image(img.convert("RGB") if img.mode != "RGB" else img, side)
    levels = [rgb32(level)]
    while max(level.size) >= 2 * LEVEL_MIN_SIDE:
        level = level.reduce(2)
        levels.append(rgb32(level))
    return ScreenCopy(tuple(levels), draft)


def rgb32(img: Image.Image) -> QImage:
    """An RGB image as a QImage in the painter's own format (``Format_RGB32``: 0xffRRGGBB),
    owning its pixels; filled by numpy, a band of rows at a time, so the GUI thread runs
    meanwhile."""
    w, h = img.size
    out = QImage(w, h, QImage.Format.Format_RGB32)
    if out.isNull():
        raise MemoryError(f"no memory for a {w} × {h} screen copy")
    if sys.byteorder != "little":  # (the bytes of 0xffRRGGBB in memory: B, G, R, 255 on little-endian)
        arr = np.ascontiguousarray(np.asarray(img), dtype=np.uint8)
        wrapped = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        return wrapped.convertToFormat(QImage.Format.Format_RGB32)
    stride = out.bytesPerLine()
    pixels = np.frombuffer(out.bits(), np.uint8, count=h * stride).reshape(h, stride)[:, : 4 * w]
    pixels = pixels.reshape(h, w, 4)
    for top in range(0, h, BAND):
        band = np.asarray(img.crop((0, top, w, min(h, top + BAND))))
        rows = pixels[top : top + band.shape[0]]
        rows[..., 0], rows[..., 1], rows[..., 2] = band[..., 2], band[..., 1], band[..., 0]
    pixels[..., 3] = 255
    return out
