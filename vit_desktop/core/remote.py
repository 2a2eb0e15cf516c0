"""Fetching one image from a web link (a link dragged from a browser), with a size cap and a
timeout.  The window asks the person first; this module only does the fetch (through
:mod:`.http`, never redirected away from the host the person agreed to) and the decoding."""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from collections.abc import Callable

from . import http as web
from .errors import ImageLoadError
from .images import DEFAULT_MAX_PIXELS, LoadedImage, load_image

MAX_BYTES = 50_000_000
TIMEOUT_S = 20.0


def is_web_url(text: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(text.strip())
    except ValueError:  # "http://[::1" and the like
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def host_of(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or url
    except ValueError:
        return url


def fetch_image(url: str, *, max_bytes: int = MAX_BYTES, timeout: float = TIMEOUT_S,
                cancel: Callable[[], bool] | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:  # fmt: skip
    """Download ``url`` (http/https only) into memory, at most ``max_bytes`` and ``timeout``
    seconds in all, and decode it with the same checks as a local file.  Redirects may not
    leave the link's host (the person agreed to that one).

    Every failure is an :class:`ImageLoadError` with one line naming the link."""
    wait = min(timeout, web.CONNECT_S)
    try:
        data = web.fetch_bytes(
            url, max_bytes=max_bytes, deadline_s=timeout, stall_s=wait, connect_s=wait, cancel=cancel,
            headers={"Accept": "image/*"}, same_host=True,
        )  # fmt: skip
    except web.HttpError as exc:
        raise ImageLoadError(f"{url}: {_reason(exc, max_bytes, timeout, wait)}") from None
    # Decode through the same loader as files (format checks, pixel cap, EXIF, modes).
    fd, tmp = tempfile.mkstemp(prefix="vit-desktop-web-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            loaded = load_image(tmp, max_pixels=max_pixels)
        except ImageLoadError as exc:
            reason = exc.one_line().split(": ", 1)[-1]
            raise ImageLoadError(f"{url}: {reason}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return LoadedImage(loaded.image, loaded.original_size, loaded.format, url)


def _reason(exc: web.HttpError, max_bytes: int, timeout: float, wait: float) -> str:
    """Why a web image was not fetched, in words for the person (the link goes before it)."""
    if isinstance(exc, web.Cancelled):
        return "cancelled"
    if isinstance(exc, web.DeadlineExceeded):
        return f"took longer than {timeout:.0f} s; not fetched"
    if isinstance(exc, web.Stalled) or (isinstance(exc, web.ConnectFailed) and exc.timed_out):
        return f"no answer within {wait:.0f} s"
    if isinstance(exc, web.TooLarge):
        allowed = f"{max_bytes / 1e6:.0f} MB allowed for a web image"
        if exc.declared is not None:
            return f"the file is {exc.declared / 1e6:.0f} MB, more than the {allowed}"
        return f"more than the {allowed}; not fetched"
    return exc.reason  # not a web link, could not connect, bad status, refused redirect, cut off
