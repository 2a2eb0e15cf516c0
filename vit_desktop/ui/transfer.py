"""What a drop or the clipboard carries, and what a drop would do, in words."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QMimeData
from PySide6.QtGui import QImage


@dataclass
class Payload:
    """What a drop or the clipboard carries, in the order we prefer it."""

    paths: list[str] = field(default_factory=list)  # local files and folders
    images: list = field(default_factory=list)  # PIL images (raw image data)
    urls: list[str] = field(default_factory=list)  # web links (fetched only when the person agrees)

    def __bool__(self) -> bool:
        return bool(self.paths or self.images or self.urls)


#: File endings of model files a drop opens as the model (the core's loader decides the rest).
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")
#: A folder holding ``config.json`` and one of these is a model folder (Hugging Face, timm).
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def is_model_path(path: str) -> bool:
    """A model file (by its ending) or a model folder (``config.json`` and weights), which a
    drop opens as the model instead of classifying."""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "config.json")) and any(
            os.path.isfile(os.path.join(path, w)) for w in FOLDER_WEIGHTS
        )
    return path.lower().endswith(MODEL_SUFFIXES) and os.path.isfile(path)


def _web_urls(md: QMimeData) -> list[str]:
    from ..core.remote import is_web_url

    urls = [u.toString() for u in md.urls() if not u.isLocalFile()] if md.hasUrls() else []
    if not urls and md.hasText():
        urls = [line.strip() for line in md.text().splitlines() if line.strip()]
    return [u for u in urls if is_web_url(u)]


def mime_payload(md: QMimeData | None) -> Payload:
    """Local paths first, then raw image data, then web links, then a path typed as text."""
    if md is None:
        return Payload()
    if md.hasUrls():
        local = [u.toLocalFile() for u in md.urls() if u.isLocalFile()]
        if local:
            return Payload(paths=local)
    if md.hasImage():
        qimg = md.imageData()
        if isinstance(qimg, QImage) and not qimg.isNull():
            return Payload(images=[qimage_to_pil(qimg)])
    urls = _web_urls(md)
    if urls:
        return Payload(urls=urls)
    if md.hasText():
        text = md.text().strip()
        if text and os.path.exists(text):
            return Payload(paths=[text])
    return Payload()


def describe_drop(md: QMimeData) -> tuple[bool, str]:
    """Whether a drag can be dropped, and what a drop would do (or why not), in words."""
    if md.hasUrls():
        local = [u.toLocalFile() for u in md.urls() if u.isLocalFile()]
        models = [p for p in local if is_model_path(p)]
        if models:
            name = os.path.basename(os.path.normpath(models[0]))
            return True, f"Drop to open the model {name}"
        if local:
            folders = sum(os.path.isdir(p) for p in local)
            files = len(local) - folders
            bits = ([f"{files} file{'s' * (files != 1)}"] if files else []) + (
                [f"{folders} folder{'s' * (folders != 1)} (walked)"] if folders else []
            )
            return True, f"Drop to classify {' and '.join(bits)}"
    if md.hasImage():
        return True, "Drop to classify the dragged image"
    urls = _web_urls(md)
    if urls:
        from ..core.remote import host_of

        what = "image" if len(urls) == 1 else f"{len(urls)} images"
        return True, f"Drop to fetch the {what} from {host_of(urls[0])} (you will be asked first)"
    if md.hasText() and os.path.exists(md.text().strip()):
        return True, "Drop to classify this path"
    return False, (
        "Cannot drop this here: only image files, folders, image data, web links to images and model files"
    )


def qimage_to_pil(qimg: QImage):
    from PIL import Image

    img = qimg.convertToFormat(QImage.Format.Format_RGBA8888)
    w, h = img.width(), img.height()
    buf = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    return Image.fromarray(buf[:, : w * 4].reshape(h, w, 4).copy(), "RGBA")
