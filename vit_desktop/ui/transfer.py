"""What crosses the window's edges: drops and pastes in, result files out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
from PySide6.QtCore import QMimeData
from PySide6.QtGui import QImage


def can_accept(md: QMimeData) -> bool:
    """Local files and folders, or raw image data (from another program)."""
    return (md.hasUrls() and any(u.isLocalFile() for u in md.urls())) or md.hasImage()


def mime_payload(md: QMimeData | None) -> tuple[list[str], list]:
    """(local paths, PIL images) carried by a drop or the clipboard."""
    if md is None:
        return [], []
    if md.hasUrls():
        local = [u.toLocalFile() for u in md.urls() if u.isLocalFile()]
        if local:
            return local, []
    if md.hasImage():
        qimg = md.imageData()
        if isinstance(qimg, QImage) and not qimg.isNull():
            return [], [qimage_to_pil(qimg)]
    if md.hasText():
        text = md.text().strip()
        if text and os.path.exists(text):
            return [text], []
    return [], []


def qimage_to_pil(qimg: QImage):
    from PIL import Image

    img = qimg.convertToFormat(QImage.Format.Format_RGBA8888)
    w, h = img.width(), img.height()
    buf = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    return Image.fromarray(buf[:, : w * 4].reshape(h, w, 4).copy(), "RGBA")


def expand(paths: Iterable[str]) -> Iterator[str]:
    """Files as given and the images inside folders (walked)."""
    from ..cli import iter_image_paths

    yield from iter_image_paths(list(paths), recursive=True)


def write_results(rows: Iterable[dict], path: str) -> None:
    """The command line's JSON lines or CSV, chosen by the file's extension."""
    from ..cli import Writer

    fmt = "csv" if path.lower().endswith(".csv") else "json"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = Writer(fmt, f)
        for row in rows:
            w.write(row)
