"""Fetching one image from a web link (a link dragged from a browser), with a size cap and a
timeout.  The window asks the person first; this module only does the fetch, safely."""

from __future__ import annotations

import http.client
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable

from .errors import ImageLoadError
from .images import DEFAULT_MAX_PIXELS, LoadedImage, load_image
from .weights import wake_blocked_read

MAX_BYTES = 50_000_000
TIMEOUT_S = 20.0
_CHUNK = 1 << 16


def is_web_url(text: str) -> bool:
    parts = urllib.parse.urlsplit(text.strip())
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def _open(url: str, timeout: float, current: list, hops: int = 5):
    """(connection, response) for ``url``, following up to ``hops`` redirects (never from
    https to http).  ``current[0]`` is the connection in use, for the watcher."""
    for _ in range(hops + 1):
        parts = urllib.parse.urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=timeout)
        current[0] = conn
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        try:
            conn.request("GET", target, headers={"User-Agent": "vit-desktop", "Accept": "image/*"})
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            new = urllib.parse.urljoin(url, resp.getheader("Location"))
            resp.close()
            conn.close()
            if parts.scheme == "https" and not new.startswith("https:"):
                raise ImageLoadError(f"{url}: refused a redirect from https to {new}")
            if not is_web_url(new):
                raise ImageLoadError(f"{url}: refused a redirect to {new}")
            url = new
            continue
        if resp.status != 200:
            resp.close()
            conn.close()
            raise ImageLoadError(f"{url}: the server answered {resp.status} {resp.reason}")
        return conn, resp
    raise ImageLoadError(f"{url}: too many redirects")


def fetch_image(url: str, *, max_bytes: int = MAX_BYTES, timeout: float = TIMEOUT_S,
                cancel: Callable[[], bool] | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:  # fmt: skip
    """Download ``url`` (http/https only) into memory, at most ``max_bytes`` and ``timeout``
    seconds in all, and decode it with the same checks as a local file.

    Every failure is an :class:`ImageLoadError` with one line naming the link."""
    if not is_web_url(url):
        raise ImageLoadError(f"{url}: only http and https links can be fetched")
    deadline = time.monotonic() + timeout
    data = bytearray()
    conn = resp = None
    current: list = [None]
    stop = threading.Event()
    why: list[str] = []

    def watch() -> None:
        """A read blocked on a slow server cannot see Cancel or the deadline: shutting the
        socket down from here wakes it at once."""
        while not stop.wait(0.05):
            if cancel is not None and cancel():
                why.append(f"{url}: cancelled")
            elif time.monotonic() > deadline:
                why.append(f"{url}: took longer than {timeout:.0f} s; not fetched")
            else:
                continue
            wake_blocked_read(current[0])
            return

    watcher = threading.Thread(target=watch, name="fetch-watch", daemon=True)
    watcher.start()
    try:
        conn, resp = _open(url, min(timeout, 10.0), current)
        declared = resp.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise ImageLoadError(f"{url}: the file is {int(declared) / 1e6:.0f} MB, more than the "
                                 f"{max_bytes / 1e6:.0f} MB allowed for a web image")  # fmt: skip
        while not why:
            if cancel is not None and cancel():
                why.append(f"{url}: cancelled")
                break
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            data += chunk
            if len(data) > max_bytes:
                raise ImageLoadError(f"{url}: more than the {max_bytes / 1e6:.0f} MB allowed for a web "
                                     "image; not fetched")  # fmt: skip
    except ImageLoadError:
        raise
    except TimeoutError:
        if not why:
            raise ImageLoadError(f"{url}: no answer within {min(timeout, 10.0):.0f} s") from None
    except (http.client.HTTPException, OSError) as exc:
        if not why:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ImageLoadError(f"{url}: could not connect ({reason})") from None
    finally:
        stop.set()
        watcher.join()
        if resp is not None:
            resp.close()
        if conn is not None:
            conn.close()
    if why:  # the watcher stopped it: Cancel or the deadline
        raise ImageLoadError(why[0])
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
    loaded.image.load()
    return LoadedImage(loaded.image, loaded.original_size, loaded.format, url)
