"""The one safe image loader used everywhere (command line, app, benchmarks).

* Formats: whatever Pillow decodes here (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF when built in);
  animated and multi-page files give their first frame.
* EXIF orientation is applied; CMYK, palette, grey, alpha (composited on white), 16-bit
  (scaled, not clipped) and float images all come out as 8-bit RGB.
* A pixel cap guards against decompression bombs; the size is checked from the header
  before anything is decoded.
* Large JPEGs are decoded at a reduced scale with ``draft()`` when the caller says how
  many pixels it needs; ``original_size`` always reports the full, upright size.
* Only image formats are decoded (the list below): a PostScript or other program-like file
  renamed ``.jpg`` is refused, never handed to an outside interpreter such as Ghostscript.
* Only regular files are opened: a pipe, socket or device named ``x.jpg`` is refused at
  once instead of blocking the caller forever.
* Every failure is an :class:`ImageLoadError` with a one-line reason.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError
from .text import brief, short_name

#: Default decompression-bomb guard, in pixels (Pillow's own error threshold).
DEFAULT_MAX_PIXELS = 178_956_970

IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".avif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".ico",
        ".tga",
        ".jp2",
        ".j2k",
        ".heic",
        ".heif",
    ]
)

#: Pillow decoders we let near a file (MPO arrives through the JPEG opener).  Formats that
#: hand the file to another program (EPS → Ghostscript, WMF) or that no one drops on an
#: image classifier stay out.
DECODERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "AVIF", "PPM", "ICO", "TGA",
            "JPEG2000", "HEIF")  # fmt: skip

_TRANSPOSING = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_limit_lock = threading.Lock()


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # 8-bit RGB, upright; may be smaller than original_size (draft)
    original_size: tuple[int, int]  # (width, height) of the full-resolution upright image
    format: str | None
    source: str

    @property
    def decode_scale(self) -> float:
        """Decoded width ÷ original width (1.0 unless ``draft()`` reduced the decode)."""
        return self.image.width / self.original_size[0]


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _ensure_pillow_limit(max_pixels: int) -> None:
    # Pillow raises its own DecompressionBombError above 2 × MAX_IMAGE_PIXELS; we check the
    # cap ourselves from the header, so Pillow's limit only needs to be at least as loose.
    with _limit_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and max_pixels > 2 * current:
            Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1


def _decoders() -> list[str]:
    Image.init()
    return [f for f in DECODERS if f in Image.OPEN]


def _open_regular(src: str, name: str):
    """A binary file object for ``src`` if it is a regular file; refusal otherwise.

    The file is opened without blocking (a pipe named ``x.jpg`` would otherwise wait for a
    writer forever) and then checked with ``fstat``, so nothing can swap it in between."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(src, flags)
    except OSError as exc:
        raise ImageLoadError(_os_reason(exc, src, name)) from None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ImageLoadError(_os_reason(exc, src, name)) from None
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise ImageLoadError(f"{name}: is a folder, not an image file")
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ImageLoadError(f"{name}: is {kind}, not an image file")
    if info.st_size == 0:
        os.close(fd)
        raise ImageLoadError(f"{name}: the file is empty (0 bytes), not an image")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _os_reason(exc: OSError, src: str, name: str) -> str:
    code = exc.errno
    if isinstance(exc, IsADirectoryError):
        return f"{name}: is a folder, not an image file"
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(src):
            return f"{name}: a symbolic link to a file that does not exist"
        return f"{name}: no such file"
    if isinstance(exc, PermissionError):
        return f"{name}: permission denied (the file cannot be read)"
    if code == errno.ELOOP:
        return f"{name}: a symbolic link that loops back on itself"
    if code == errno.ENAMETOOLONG:
        return f"{name}: the file name is too long for this system"
    reason = exc.strerror or type(exc).__name__
    return f"{name}: could not be read ({reason})"


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not lose the picture
        return 1


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha on white, 16-bit scaled, floats ranged."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / max(hi - lo, 1.0) * 255.0
        elif mode == "I" and arr.max() <= 255:
            pass  # an 8-bit image stored in 32-bit ints
        else:
            arr = arr / 257.0
        grey = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode == "F":
        arr = np.asarray(im).astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif lo < 0.0 or hi > 255.0:
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        grey = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if mode in ("1", "L") and "transparency" in im.info:
        has_alpha = True
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]] | None = None,
) -> LoadedImage:
    """Open ``path`` as an upright 8-bit RGB image.

    ``min_size`` (width, height), or a function of the upright full size that gives it,
    lets a large JPEG decode at 1/2, 1/4 or 1/8 scale as long as the result stays at
    least that large (in upright orientation).
    """
    src = os.fspath(path)
    name = short_name(src)
    _ensure_pillow_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            # Our own pixel cap replaces Pillow's bomb warning; its notes on odd files are
            # not for the person (a failure is reported as ImageLoadError below).
            warnings.simplefilter("ignore")
            with _open_regular(src, name) as fp, Image.open(fp, formats=_decoders()) as im:
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise ImageLoadError(f"{name}: the image has no pixels ({w}×{h})")
                if w * h > max_pixels:
                    raise ImageLoadError(
                        f"{name}: {w}×{h} is {w * h / 1e6:.0f} MP, above the limit of "
                        f"{max_pixels / 1e6:.0f} MP (a guard against decompression bombs)"
                    )
                orientation = _orientation(im)
                original = (h, w) if orientation in _TRANSPOSING else (w, h)
                fmt = im.format
                if min_size is not None and fmt in ("JPEG", "MPO"):
                    need_w, need_h = min_size(original) if callable(min_size) else min_size
                    if orientation in _TRANSPOSING:
                        need_w, need_h = need_h, need_w
                    if w >= 2 * need_w and h >= 2 * need_h:
                        im.draft("RGB", (need_w, need_h))
                # An animated or multi-page file is on its first frame after opening; asking
                # for n_frames would walk the whole file first.
                im.load()
                if orientation != 1:
                    try:
                        im = ImageOps.exif_transpose(im)
                    except Exception:
                        original = (w, h)  # keep the pixels as stored rather than lose the image
                rgb = to_rgb(im)
                if rgb is im:
                    rgb = im.copy()
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{name}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageLoadError(f"{name}: permission denied (the file cannot be read)") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image in a format this app reads") from None
    except Image.DecompressionBombError as exc:
        match = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(match.group(1)) / 1e6:.0f} MP" if match else "too many pixels"
        raise ImageLoadError(
            f"{name}: {size}, above the limit of {max_pixels / 1e6:.0f} MP "
            "(a guard against decompression bombs)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as exc:
        reason = brief(str(exc)) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "the file is truncated"
        raise ImageLoadError(f"{name}: corrupt or unreadable image data ({reason})") from None
    except MemoryError:
        raise ImageLoadError(f"{name}: not enough memory to decode this image") from None
    return LoadedImage(rgb, original, fmt, src)
