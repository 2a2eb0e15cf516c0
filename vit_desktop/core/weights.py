"""The weights manager: find, verify and download pretrained weights.

* Files live where torchvision keeps them (``$TORCH_HOME/hub/checkpoints``, by default
  ``~/.cache/torch/hub/checkpoints``) under torchvision's own names, so weights a person
  already has are found and not fetched again.
* A cached file is hashed before every use; a file that fails is removed and, when the
  network is there, fetched again.
* Downloads go to a unique ``.partial`` file that is renamed into place only after its
  hash matched; progress is reported as (bytes done, total).  The fetch itself (redirects,
  size cap, stall timeout, a cancel that wakes a stalled read) is :mod:`.http`'s.
* torchvision publishes only the first 8 hex digits of each file's SHA-256 (32 bits: a
  file made to match them is within reach).  So the full SHA-256 of every verified file is
  kept in ``vit-desktop-manifest.json`` in the cache folder, and a cached file is checked
  against it from then on: one that matches the prefix but not the recorded digest is
  treated as damaged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import http as web
from .catalog import ModelEntry, plain_http_notice, weights_base_url, with_base_url
from .errors import ChecksumError, CorruptCacheError, DownloadCancelled, OfflineError, WeightsError

Progress = Callable[[int, int | None], None]
Cancel = Callable[[], bool]

CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 30.0
DISK_MARGIN = 64 << 20
MANIFEST = "vit-desktop-manifest.json"  # file name -> full SHA-256 of the verified file
MANIFEST_MAX_BYTES = 4 << 20

log = logging.getLogger("vit_desktop.weights")
_manifest_lock = threading.Lock()
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        recorded = recorded_sha256(path.name, path.parent)
        if not hash_matches(digest, entry.sha256):
            reason = f"its SHA-256 {digest[:12]}… does not match {entry.sha256}"
        elif recorded is not None and recorded != digest:
            reason = f"its SHA-256 {digest[:12]}… is not the {recorded[:12]}… recorded in {MANIFEST}"
        else:
            if recorded is None:  # a file put there by hand or by torchvision: known from now on
                record_sha256(path.name, digest, path.parent)
            return path
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


def _missing_message(entry: ModelEntry, reason: str) -> str:
    target = cached_path(entry)
    url = with_base_url(entry, weights_base_url()).url
    return (
        f"{entry.display_name}: weights file {entry.filename} is not on disk and could not be "
        f"downloaded ({reason}); download {url} by hand and put it at {target}"
    )


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
    base = weights_base_url()
    if notice := plain_http_notice(base):
        log.warning("%s", notice)
    entry = with_base_url(entry, base)
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
    cap = size_cap(entry)
    try:
        with web.open_stream(
            entry.url, max_bytes=cap, stall_s=STALL_TIMEOUT_S, connect_s=CONNECT_TIMEOUT_S, cancel=cancel
        ) as resp:
            _save(entry, resp, partial, target, progress)
    except web.HttpError as exc:
        raise _http_failure(entry, exc) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise WeightsError(
                f"the disk filled up while downloading {entry.filename}; nothing was saved"
            ) from None
        raise WeightsError(f"could not write {partial}: {exc.strerror or exc}") from None
    finally:
        try:
            partial.unlink()
        except FileNotFoundError:
            pass
    return target


def _save(
    entry: ModelEntry, resp: web.Response, partial: Path, target: Path, progress: Progress | None
) -> None:
    """Write the body to ``partial`` and, once its hash matched, rename it to ``target``."""
    total = resp.total
    free = _free_space(target.parent)
    if total is not None and free is not None and free < total + DISK_MARGIN:
        raise WeightsError(
            f"not enough disk space for {entry.filename}: {total / 1e6:.0f} MB needed, "
            f"{free / 1e6:.0f} MB free in {target.parent}"
        )
    h = hashlib.sha256()
    with open(partial, "wb") as out:
        if progress:
            progress(0, total)
        for chunk in iter(lambda: resp.read_chunk(CHUNK), b""):
            out.write(chunk)
            h.update(chunk)
            if progress:
                progress(resp.received, total)
    if resp.received == 0:
        raise WeightsError(f"download of {entry.filename}: the server sent nothing; try again")
    digest = h.hexdigest()
    if not hash_matches(digest, entry.sha256):
        raise ChecksumError(
            f"download of {entry.filename} does not match its published hash "
            f"(got {digest[:16]}…, expected {entry.sha256}); nothing was saved"
        )
    os.replace(partial, target)
    record_sha256(target.name, digest, target.parent)


def manifest_path(folder: Path | None = None) -> Path:
    return (folder or cache_dir()) / MANIFEST


def _read_manifest(folder: Path) -> dict[str, dict]:
    """The manifest's records; an unreadable or malformed manifest counts as empty (it is
    written anew with the next verified file) and is logged."""
    path = manifest_path(folder)
    try:
        with open(path, "rb") as f:
            raw = f.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return {}
    try:
        if len(raw) > MANIFEST_MAX_BYTES:
            raise ValueError("too large")
        files = json.loads(raw.decode("utf-8"))["files"]
        if not isinstance(files, dict):
            raise TypeError("no files")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        log.warning("ignoring the damaged weights manifest %s (%s)", path, exc)
        return {}
    return {
        name: rec
        for name, rec in files.items()
        if isinstance(rec, dict) and isinstance(rec.get("sha256"), str) and _SHA256.fullmatch(rec["sha256"])
    }


def recorded_sha256(filename: str, folder: Path | None = None) -> str | None:
    """The full SHA-256 recorded for ``filename`` when it was verified, if any."""
    rec = _read_manifest(folder or cache_dir()).get(filename)
    return rec["sha256"] if rec else None


def record_sha256(filename: str, digest: str, folder: Path | None = None) -> bool:
    """Record ``filename``'s verified full SHA-256 (atomically: a new file renamed over the
    manifest).  Another process may write the manifest at the same moment, so the record is
    read back and written again if it was lost.  False (and a log line) when the manifest
    cannot be written: the file is still used, checked against its published prefix."""
    folder = folder or cache_dir()
    target = manifest_path(folder)
    with _manifest_lock:
        for _ in range(5):
            files = _read_manifest(folder)
            if files.get(filename, {}).get("sha256") == digest:
                return True
            files[filename] = {"sha256": digest, "recorded": int(time.time())}
            tmp = folder / f"{MANIFEST}.{secrets.token_hex(4)}.partial"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump({"version": 1, "files": files}, f, indent=1, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except OSError as exc:
                log.warning("cannot write %s: %s", target, exc.strerror or exc)
                try:
                    tmp.unlink()
                except OSError:
                    pass
                return False
    return _read_manifest(folder).get(filename, {}).get("sha256") == digest


def _http_failure(entry: ModelEntry, exc: web.HttpError) -> WeightsError:
    """The weights manager's error, in its words, for a failed fetch."""
    name = entry.filename
    if isinstance(exc, web.Cancelled):
        return DownloadCancelled(f"download of {name} cancelled")
    if isinstance(exc, web.BadUrl):
        return WeightsError(f"{entry.display_name}: bad download URL {entry.url!r} ({exc.reason})")
    if isinstance(exc, web.ConnectFailed):
        why = f"bad answer from the server: {exc.detail}" if exc.protocol else f"no connection: {exc.detail}"
        return OfflineError(_missing_message(entry, why))
    if isinstance(exc, web.Stalled):
        return WeightsError(
            f"download of {name} stalled: no data for {exc.stall_s:.0f} s after {exc.received} bytes"
        )
    if isinstance(exc, web.Interrupted):
        cause = f" ({exc.cause})" if exc.cause else ""
        total = exc.total if exc.total is not None else "?"
        return WeightsError(
            f"download of {name} was interrupted after {exc.received} of {total} bytes{cause}; try again"
        )
    if isinstance(exc, web.TooLarge):
        if exc.declared is not None:
            said = f"announced {exc.declared / 1e6:.0f} MB"
        else:
            said = f"sent more than {exc.limit / 1e6:.0f} MB"
        return WeightsError(
            f"download of {name} refused: the server {said} for a file of about {entry.file_size_mb:.0f} MB"
        )
    return WeightsError(str(exc))  # a bad status or a refused redirect, naming the URL


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
