"""The weights manager: find, verify and download pretrained weights.

* Files live where torchvision keeps them (``$TORCH_HOME/hub/checkpoints``, by default
  ``~/.cache/torch/hub/checkpoints``) under torchvision's own names, so weights a person
  already has are found and not fetched again.
* A cached file is hashed before every use; a file that fails is removed and, when the
  network is there, fetched again.
* Downloads go to a unique ``.partial`` file that is renamed into place only after its
  hash matched; progress is reported as (bytes done, total) and a cancel flag is checked
  between chunks and, by a watcher thread, during stalls, so nothing hangs.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import secrets
import shutil
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .catalog import ModelEntry, weights_base_url, with_base_url
from .errors import ChecksumError, CorruptCacheError, DownloadCancelled, OfflineError, WeightsError

Progress = Callable[[int, int | None], None]
Cancel = Callable[[], bool]

CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 30.0
POLL_S = 0.25
DISK_MARGIN = 64 << 20
USER_AGENT = "vit-desktop"


def cache_dir() -> Path:
    """torchvision's checkpoint folder (honours ``TORCH_HOME`` and ``XDG_CACHE_HOME``)."""
    torch_home = os.environ.get("TORCH_HOME")
    if not torch_home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        torch_home = os.path.join(xdg, "torch")
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def cached_path(entry: ModelEntry) -> Path:
    if not entry.filename:
        raise WeightsError(f"{entry.display_name} has no weights file to cache")
    return cache_dir() / entry.filename


def is_downloaded(entry: ModelEntry) -> bool:
    """Whether a non-empty weights file is on disk (cheap; :func:`ensure` verifies it)."""
    if not entry.downloadable:
        return True
    try:
        st = cached_path(entry).stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


def sha256_file(path: Path, cancel: Cancel | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if cancel is not None and cancel():
                raise DownloadCancelled("cancelled while checking the weights file")
    return h.hexdigest()


def hash_matches(digest: str, expected: str | None) -> bool:
    if not expected:
        return True
    return digest.lower().startswith(expected.lower())


@dataclass(frozen=True)
class Fetched:
    path: Path
    downloaded: bool  # False when a verified cached copy was used
    recovered_corrupt: bool = False


def verify_cached(entry: ModelEntry, cancel: Cancel | None = None) -> Path | None:
    """The cached file if it passes its hash; a failing file is deleted and reported."""
    path = cached_path(entry)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WeightsError(f"the cached weights {path} cannot be checked ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(
            f"{path} should be the weights file but is a folder or another non-file; remove it and try again"
        )
    if st.st_size == 0:
        reason = "it is empty"
    else:
        try:
            digest = sha256_file(path, cancel)
        except OSError as exc:
            raise WeightsError(f"the cached weights {path} cannot be read ({exc.strerror or exc})") from None
        if hash_matches(digest, entry.sha256):
            return path
        reason = f"its SHA-256 {digest[:12]}… does not match {entry.sha256}"
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    raise CorruptCacheError(f"the cached weights {path} were damaged ({reason}) and have been removed")


def ensure(
    entry: ModelEntry,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    *,
    allow_download: bool = True,
) -> Fetched:
    """A verified local copy of ``entry``'s weights, downloading it if needed."""
    recovered = False
    try:
        path = verify_cached(entry, cancel)
        if path is not None:
            return Fetched(path, downloaded=False)
    except CorruptCacheError:
        if not allow_download:
            raise
        recovered = True
    if not allow_download:
        raise OfflineError(_missing_message(entry, "downloads are turned off"))
    path = download(entry, progress, cancel)
    return Fetched(path, downloaded=True, recovered_corrupt=recovered)


def wake_blocked_read(conn: http.client.HTTPConnection | None) -> None:
    """Make a read blocked in recv() on ``conn`` (from another thread) return at once, by
    shutting its socket down; nothing happens if it is not connected or already closed."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _missing_message(entry: ModelEntry, reason: str) -> str:
    target = cached_path(entry)
    url = with_base_url(entry, weights_base_url()).url
    return (
        f"{entry.display_name}: weights file {entry.filename} is not on disk and could not be "
        f"downloaded ({reason}); download {url} by hand and put it at {target}"
    )


def _open(url: str, redirects: int = 5):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WeightsError(f"unsupported download URL {url!r}")
    port = parts.port
    host = parts.hostname or ""
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=CONNECT_TIMEOUT_S, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        resp = conn.getresponse()
    except BaseException:
        conn.close()
        raise
    if resp.status in (301, 302, 303, 307, 308) and redirects > 0:
        location = resp.getheader("Location")
        conn.close()
        if not location:
            raise WeightsError(f"{url}: redirect without a location")
        target = urllib.parse.urljoin(url, location)
        if parts.scheme == "https" and urllib.parse.urlsplit(target).scheme != "https":
            raise WeightsError(f"{url}: refused a redirect from https to {target}")
        return _open(target, redirects - 1)
    if resp.status != 200:
        conn.close()
        raise WeightsError(f"{url}: the server answered {resp.status} {resp.reason}")
    if conn.sock is not None:
        conn.sock.settimeout(STALL_TIMEOUT_S)
    return conn, resp


def size_cap(entry: ModelEntry) -> int | None:
    """The most bytes a download of ``entry`` may bring: its catalog size with room to spare
    (a server that streams without end must not fill the disk)."""
    if not entry.file_size_mb:
        return None
    return int(entry.file_size_mb * (1 << 20) * 1.25) + (1 << 20)


def _free_space(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def download(entry: ModelEntry, progress: Progress | None = None, cancel: Cancel | None = None) -> Path:
    """Fetch ``entry``'s weights into the cache; raise a typed error on any failure."""
    entry = with_base_url(entry, weights_base_url())
    if not entry.url:
        raise WeightsError(f"{entry.display_name} has no download URL")
    if not entry.sha256:
        raise WeightsError(
            f"{entry.display_name} has no published hash; unverified weights are not downloaded"
        )
    target = cached_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)  # left by a process that was killed mid-download
    partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.partial")
    try:
        conn, resp = _open(entry.url)
    except ValueError as exc:  # a malformed URL (bad port, bad host name)
        raise WeightsError(f"{entry.display_name}: bad download URL {entry.url!r} ({exc})") from None
    except OSError as exc:  # DNS failure, refused, unreachable, TLS, timeout
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise OfflineError(_missing_message(entry, f"no connection: {reason}")) from None
    except http.client.HTTPException as exc:
        raise OfflineError(_missing_message(entry, f"bad answer from the server: {exc}")) from None
    total_header = resp.getheader("Content-Length")
    total = int(total_header) if total_header and total_header.isascii() and total_header.isdigit() else None
    cap = size_cap(entry)
    if total is not None and cap is not None and total > cap:
        conn.close()
        raise WeightsError(
            f"download of {entry.filename} refused: the server announced {total / 1e6:.0f} MB for a file "
            f"of about {entry.file_size_mb:.0f} MB"
        )
    free = _free_space(target.parent)
    if total is not None and free is not None and free < total + DISK_MARGIN:
        conn.close()
        raise WeightsError(
            f"not enough disk space for {entry.filename}: {total / 1e6:.0f} MB needed, "
            f"{free / 1e6:.0f} MB free in {target.parent}"
        )
    h = hashlib.sha256()
    done = 0
    cancelled = threading.Event()
    finished = threading.Event()

    def watch() -> None:
        # A stalled read blocks in recv(); shutting the socket down wakes it at once.
        while not finished.wait(POLL_S):
            if cancel is not None and cancel():
                cancelled.set()
                wake_blocked_read(conn)
                return

    watcher = threading.Thread(target=watch, name="download-cancel", daemon=True)
    watcher.start()
    try:
        with open(partial, "wb") as out:
            if progress:
                progress(0, total)
            while True:
                if cancelled.is_set() or (cancel is not None and cancel()):
                    raise DownloadCancelled(f"download of {entry.filename} cancelled")
                try:
                    want = CHUNK if total is None else min(CHUNK, total - done + 1)
                    chunk = resp.read1(want) if want > 0 else b""
                except TimeoutError:
                    raise WeightsError(
                        f"download of {entry.filename} stalled: no data for "
                        f"{STALL_TIMEOUT_S:.0f} s after {done} bytes"
                    ) from None
                except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                        raise
                    if cancelled.is_set():
                        raise DownloadCancelled(f"download of {entry.filename} cancelled") from None
                    raise WeightsError(
                        f"download of {entry.filename} was interrupted after {done} of "
                        f"{total if total is not None else '?'} bytes ({type(exc).__name__}); "
                        "try again"
                    ) from None
                if cancelled.is_set():
                    raise DownloadCancelled(f"download of {entry.filename} cancelled")
                if not chunk:
                    break
                done += len(chunk)
                if cap is not None and done > cap:
                    raise WeightsError(
                        f"download of {entry.filename} refused: the server sent more than "
                        f"{cap / 1e6:.0f} MB for a file of about {entry.file_size_mb:.0f} MB"
                    )
                if total is not None and done > total:
                    raise WeightsError(
                        f"download of {entry.filename}: the server sent more than the "
                        f"{total} bytes it announced; refused"
                    )
                out.write(chunk)
                h.update(chunk)
                if progress:
                    progress(done, total)
        if total is not None and done != total:
            raise WeightsError(
                f"download of {entry.filename} was interrupted after {done} of {total} bytes; try again"
            )
        if done == 0:
            raise WeightsError(f"download of {entry.filename}: the server sent nothing; try again")
        digest = h.hexdigest()
        if not hash_matches(digest, entry.sha256):
            raise ChecksumError(
                f"download of {entry.filename} does not match its published hash "
                f"(got {digest[:16]}…, expected {entry.sha256}); nothing was saved"
            )
        os.replace(partial, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise WeightsError(
                f"the disk filled up while downloading {entry.filename}; nothing was saved"
            ) from None
        raise WeightsError(f"could not write {partial}: {exc.strerror or exc}") from None
    finally:
        finished.set()
        conn.close()
        try:
            partial.unlink()
        except FileNotFoundError:
            pass
    return target


def remove_stale_partials(folder: Path | None = None, older_than_s: float = 24 * 3600) -> int:
    """Delete ``.partial`` files left by a process that died mid-download."""
    folder = folder or cache_dir()
    n = 0
    now = time.time()
    for p in folder.glob("*.partial") if folder.exists() else ():
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                n += 1
        except OSError:
            pass
    return n
