"""Pixels for the screen, made on the worker thread: the screen copy (QImages: they may be
built off the GUI thread, QPixmaps may not) and the thumbnail (a numpy array)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from ..core.images import fit_within

DISPLAY_MAX_SIDE = 2560
THUMB_SIDE = 96
LEVEL_MIN_SIDE = 200  # the smallest level of a screen copy (its longer side, about)


def display_array(img: Image.Image, side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """``img`` at most ``side`` pixels long, shrunk with a fast reducing resize (a 6000-px
    photo in ~20 ms, not ~100 with ``thumbnail``)."""
    size = fit_within(img.size, side)
    if size == img.size:
        return np.asarray(img)
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


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
    """The screen copy of an RGB image, with its levels (call it on the worker thread)."""
    arr = np.ascontiguousarray(display_array(img, side), dtype=np.uint8)
    h, w = arr.shape[:2]
    wrapped = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    levels = [wrapped.convertToFormat(QImage.Format.Format_RGB32)]  # a copy that owns its pixels
    del wrapped
    while max(levels[-1].width(), levels[-1].height()) >= 2 * LEVEL_MIN_SIDE:
        last = levels[-1]
        levels.append(last.scaled(max(1, last.width() // 2), max(1, last.height() // 2),
                                  Qt.AspectRatioMode.IgnoreAspectRatio,
                                  Qt.TransformationMode.SmoothTransformation))  # fmt: skip
    return ScreenCopy(tuple(levels), draft)
