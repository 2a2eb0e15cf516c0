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
* Every failure is an :class:`ImageLoadError` with a one-line reason in plain words (never a
  Pillow module, class or constant name), whichever step of the decode found it.
* While a file is decoded, :func:`decoding_now` names it on that thread and the hooks given to
  :func:`watch_decodes` hear about it (the log uses this to say which file a C library's
  message was about).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
_DRAFTABLE = ("JPEG", "MPO")  # formats whose EXIF is read from the header, before any decode

#: Pillow's words for a damaged file, and ours (the first pattern found wins; case ignored).
_DAMAGED = "corrupt or unreadable image data"
_PLAIN_REASONS = (
    (r"text chunk|MAX_TEXT", "a text chunk in the PNG is too large to read (damaged or hostile file)"),
    (r"out of memory", "not enough memory to decode this image"),
    (r"truncat|not enough (image )?data|incomplete|premature|end of file|\bEOF\b|only got|missing frame",
     f"{_DAMAGED} (the file is truncated)"),
    (r"frame sequence|invalid frames", f"{_DAMAGED} (the animation's frames are missing or out of order)"),
    (r"checksum|\bcrc\b", f"{_DAMAGED} (a checksum does not match)"),
    (r"data stream|decod|buffer overrun|cannot (load|parse)|next frame|unknown error",
     f"{_DAMAGED} (the compressed picture data is damaged)"),
    (r"configuration|mode|dimension|samples per pixel|tile|layers|-bit|broken png|header",
     f"{_DAMAGED} (its header describes the pixels in a way that cannot be decoded)"),
)  # fmt: skip
#: A reason that names the library's insides (a module, a constant, Python's own words).
_INTERNAL = re.compile(
    r"ImagePlugin|_imaging|\bPIL\b|\w+\.\w+|\w_\w|\w\(|b'|b\"|\\x|[<>{}\[\]=%]|object|attribute|"
    r"argument|unpack|reshape|literal|index|NoneType|tuple|list|dict",
    re.IGNORECASE,
)
#: Exceptions that only say where in Pillow's code the file's structure broke.
_STRUCTURAL = (IndexError, TypeError, KeyError, AttributeError, struct.error)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, *_STRUCTURAL)

_decoding = threading.local()
_decode_hooks: list[Callable[[str, bool], None]] = []


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

    @property
    def reduced(self) -> bool:
        """Whether ``draft()`` decoded fewer pixels than the original has."""
        return self.image.size != self.original_size


def fit_within(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(width, height) of ``size`` shrunk to at most ``side`` on its longer side, in
    proportion (never enlarged).  As a ``min_size`` for :func:`load_image`
    (``lambda full: fit_within(full, side)``) a large JPEG decodes at the smallest scale
    that still covers a copy of that size."""
    w, h = size
    s = min(1.0, side / max(w, h, 1))
    return max(1, round(w * s)), max(1, round(h * s))


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


def decoding_now() -> str | None:
    """The name of the file this thread is decoding (as in its error messages), or None."""
    return getattr(_decoding, "name", None)


def watch_decodes(hook: Callable[[str, bool], None]) -> None:
    """Call ``hook(name, True)`` on the decoding thread just before each file is decoded and
    ``hook(name, False)`` just after (also after a failure).  A hook that raises is ignored."""
    if hook not in _decode_hooks:
        _decode_hooks.append(hook)


def _tell_hooks(name: str, started: bool) -> None:
    for hook in list(_decode_hooks):
        try:
            hook(name, started)
        except Exception:  # noqa: BLE001, S110 - a listener must never cost the picture
            pass


@contextmanager
def _decoding_file(name: str) -> Iterator[None]:
    outer = decoding_now()
    _decoding.name = name
    _tell_hooks(name, True)
    try:
        yield
    finally:
        _tell_hooks(name, False)
        _decoding.name = outer


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1 when there is none or it cannot be read).

    Call it only once the pixels are decoded, or for a format whose EXIF sits in the header
    (``_DRAFTABLE``): PNG's ``getexif()`` decodes the whole file, and a decode error caught
    here would be lost (Pillow forgets the pixel data it could not decode, and a later
    ``load()`` returns without a word)."""
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not lose the picture
        return 1


def _plain_reason(exc: BaseException) -> str:
    """What a decode error means, in words for a person (the text after ``NAME: ``)."""
    text = brief(str(exc))
    if not isinstance(exc, _STRUCTURAL):
        for pattern, reason in _PLAIN_REASONS:
            if re.search(pattern, text, re.IGNORECASE):
                return reason
    if isinstance(exc, _STRUCTURAL) or not text or _INTERNAL.search(text):
        return f"{_DAMAGED} (the file does not follow its format)"
    return f"{_DAMAGED} ({text})"


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
    with _decoding_file(name):
        rgb, original, fmt = _decode(src, name, max_pixels, min_size)
    return LoadedImage(rgb, original, fmt, src)


def _decode(
    src: str, name: str, max_pixels: int, min_size
) -> tuple[Image.Image, tuple[int, int], str | None]:
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
                fmt = im.format
                if fmt not in _DRAFTABLE:
                    # Decode first, so that a decode error is raised here and not swallowed
                    # while the EXIF is looked for.  An animated or multi-page file is on
                    # its first frame after opening (asking for n_frames would walk them all).
                    im.load()
                orientation = _orientation(im)
                original = (h, w) if orientation in _TRANSPOSING else (w, h)
                if fmt in _DRAFTABLE:
                    if min_size is not None:
                        need_w, need_h = min_size(original) if callable(min_size) else min_size
                        if orientation in _TRANSPOSING:
                            need_w, need_h = need_h, need_w
                        if w >= 2 * need_w and h >= 2 * need_h:
                            im.draft("RGB", (need_w, need_h))
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
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(f"{name}: {_plain_reason(exc)}") from None
    except MemoryError:
        raise ImageLoadError(f"{name}: not enough memory to decode this image") from None
    return rgb, original, fmt
