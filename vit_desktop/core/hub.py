"""Models from the Hugging Face Hub, named ``hf:ORG/NAME`` or ``hf:ORG/NAME@REVISION``.

* Files go into the Hugging Face cache itself (:func:`.hub_cache.cache_dir`), through
  ``huggingface_hub``: a model already downloaded with transformers or timm is found there.
* Only ``config.json``, ``preprocessor_config.json`` and safetensors weights
  (``model.safetensors``, or ``model.safetensors.index.json`` and its shards) are fetched:
  never code, never pickled weights.
* Every file is checked against the hash the Hub lists for it (the SHA-256 of a large file,
  the git blob SHA-1 of a small one) after it is downloaded and every time it is opened from
  the cache, where its blob is named by that same hash.  A file that fails is removed: the
  next use with the network on downloads it again.
* ``HF_HUB_OFFLINE=1``, ``allow_download=False`` or no network: the cached snapshot only.
* ``HF_ENDPOINT`` (a mirror) and ``HF_TOKEN`` (gated and private models) are honoured.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import hub_cache as cache
from .errors import (
    ChecksumError,
    DownloadCancelled,
    ModelNotFoundError,
    OfflineError,
    WeightsError,
)
from .hub_cache import CONFIG, INDEX, MISSING, PICKLES, PREPROCESSOR, WEIGHTS, Want, cache_dir
from .text import brief, display

Progress = Callable[[int, int | None], None]
Cancel = Callable[[], bool]

PREFIX = "hf:"
DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 10.0
CHUNK = 256 << 10  # bytes between two progress reports (and two looks at Cancel)
DISK_MARGIN = 64 << 20
TOKEN_HINT = "set HF_TOKEN to a Hugging Face access token"

log = logging.getLogger("vit_desktop.hub")
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_transfers = threading.Lock()


@dataclass(frozen=True)
class HubRef:
    """A model repository on the Hub and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    @property
    def display(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")

    @property
    def text(self) -> str:
        return PREFIX + self.display

    @property
    def storage(self) -> Path:
        """The repository's folder in the cache."""
        return cache_dir() / ("models--" + self.repo_id.replace("/", "--"))


def is_hub_id(text: str) -> bool:
    return text.startswith(PREFIX)


def parse(text: str) -> HubRef:
    """``hf:ORG/NAME[@REVISION]`` as a :class:`HubRef`; a malformed name is one line."""
    body = text[len(PREFIX) :] if is_hub_id(text) else text
    repo, at, rev = body.partition("@")
    parts = repo.split("/")
    ok = len(parts) == 2 and len(repo) <= 96
    ok = ok and all(
        _PART.fullmatch(p) and ".." not in p and "--" not in p and p[-1] not in ".-" for p in parts
    )
    if not ok or (at and not (_REVISION.fullmatch(rev) and ".." not in rev and len(rev) <= 200)):
        raise ModelNotFoundError(
            f"{display(text)!r} is not a Hugging Face model name: expected hf:ORG/NAME or hf:ORG/NAME@REVISION "
            "(letters, digits, '-', '_' and '.'), e.g. hf:facebook/deit-tiny-patch16-224"
        )
    return HubRef(repo, rev or None)


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """Offline mode: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set now or at start-up."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# -- the snapshot a model opens from --------------------------------------------------------------


def fetch(ref: HubRef, progress: Progress | None = None, cancel: Cancel | None = None,
          allow_download: bool = True) -> Path:  # fmt: skip
    """The cached snapshot folder of ``ref`` with its config and safetensors weights, every
    file verified; missing or damaged files are downloaded when the network may be used."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise WeightsError("opening Hugging Face models needs the huggingface_hub package") from None
    storage = ref.storage
    if offline():
        return cache.snapshot(
            ref.display, storage, ref.revision, "offline mode is on (HF_HUB_OFFLINE)", cancel
        )
    if not allow_download:
        return cache.snapshot(ref.display, storage, ref.revision, "downloads are turned off", cancel)
    try:
        commit, listing = _listing(ref)
    except Exception as exc:
        failure = _failure(ref, exc, "")
        status = _status(exc)
        if isinstance(failure, OfflineError) or status is None or status in (401, 403) or status >= 500:
            try:  # the Hub cannot be asked now (no network, a token gone, the Hub down): the cache may do
                folder = cache.snapshot(ref.display, storage, ref.revision, failure.one_line(), cancel)
            except OfflineError as missing:  # says what is missing, and why it cannot be fetched now
                raise (missing if isinstance(failure, OfflineError) else failure) from None
            log.warning("%s; using the cached copy of %s", failure.one_line(), ref.display)
            return folder
        raise failure from None
    names = _choose(ref, listing)
    cache.write_ref(storage, ref.revision or "main", commit)
    cache.remember_listing(storage, commit, listing)
    snapshot = storage / "snapshots" / commit
    _ensure(ref, commit, names, listing, progress, cancel)
    if INDEX in names:  # the shards the index names
        _ensure(ref, commit, cache.shards(ref.display, snapshot / INDEX, listing), listing, progress, cancel)
    return snapshot


def _listing(ref: HubRef) -> tuple[str, dict[str, Want]]:
    """The commit ``ref`` names now and the hashes of its files (one API call)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint())
    info = api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True, timeout=TIMEOUT_S)
    if not info.sha or not re.fullmatch(r"[0-9a-f]{40}", info.sha):
        raise WeightsError(f"{ref.display}: the answer names no commit; is {endpoint()} a Hugging Face Hub?")
    files = {}
    for s in info.siblings or ():
        if s.lfs is not None:
            files[s.rfilename] = Want("sha256", str(s.lfs.sha256).lower(), s.lfs.size, s.blob_id)
        elif s.blob_id:
            files[s.rfilename] = Want("git", str(s.blob_id).lower(), s.size, s.blob_id)
    return info.sha, files


def _choose(ref: HubRef, listing: dict[str, Want]) -> list[str]:
    """The files a model needs, in download order; a repository without safetensors weights
    or without a config is refused in one line."""
    top = sorted(p for p in listing if "/" not in p)
    weights = [WEIGHTS] if WEIGHTS in top else [INDEX] if INDEX in top else []
    if not weights:
        pickles = [p for p in top if p.lower().endswith(PICKLES)]
        others = [p for p in top if p.endswith(".safetensors")]
        if others:
            raise WeightsError(
                f"{ref.display} has safetensors files ({', '.join(others[:3])}) but no {WEIGHTS}"
            )
        if pickles:
            raise WeightsError(f"{ref.display} has no safetensors weights, only {', '.join(pickles[:3])}: "
                               "the app does not download pickled weights")  # fmt: skip
        raise WeightsError(f"{ref.display} has no model weights")
    if CONFIG not in top:
        raise WeightsError(f"{ref.display} has no {CONFIG}; the app opens models saved with their config")
    return [CONFIG] + ([PREPROCESSOR] if PREPROCESSOR in top else []) + weights


# -- downloading ---------------------------------------------------------------------------------------


def _ensure(ref: HubRef, commit: str, names: list[str], listing: dict[str, Want],
            progress: Progress | None, cancel: Cancel | None) -> None:  # fmt: skip
    """Each of ``names`` in the snapshot of ``commit`` and matching its listed hash: cached
    files are checked (a damaged one is removed), the others downloaded."""
    snapshot = ref.storage / "snapshots" / commit
    todo = []
    for name in names:
        why = cache.damage(ref.storage, snapshot / name, listing[name], cancel)
        if why and why != MISSING:
            log.warning(
                "the cached %s of %s %s; it was removed and is downloaded again", name, ref.display, why
            )
        if why:
            todo.append(name)
    _download(ref, commit, todo, listing, progress, cancel)


def _download(ref: HubRef, commit: str, names: list[str], listing: dict[str, Want],
              progress: Progress | None, cancel: Cancel | None) -> None:  # fmt: skip
    """Fetch ``names`` into the cache through ``huggingface_hub``, reporting (bytes, total)
    and stopping at Cancel; a file that does not hash to its listed value is removed."""
    if not names:
        return
    from huggingface_hub import hf_hub_download

    storage = ref.storage
    total = sum(listing[n].size or 0 for n in names) or None
    storage.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(storage).free
    if total and free is not None and free < total + DISK_MARGIN:
        raise WeightsError(f"not enough disk space for {ref.display}: {total / 1e6:.0f} MB needed, "
                           f"{free / 1e6:.0f} MB free in {display(str(storage.parent))}")  # fmt: skip
    bar = _bar_class(ref, total, progress, cancel)
    if progress:
        progress(0, total)
    for name in names:
        if cancel is not None and cancel():
            raise DownloadCancelled(f"download of {ref.display} cancelled")
        try:
            with _plain_transfers():
                pointer = hf_hub_download(ref.repo_id, name, revision=commit, cache_dir=str(storage.parent),
                                          endpoint=endpoint(), etag_timeout=TIMEOUT_S, tqdm_class=bar)  # fmt: skip
        except Exception as exc:
            if cancel is not None and cancel():  # whatever broke, the person had said stop
                raise DownloadCancelled(f"download of {ref.display} cancelled") from None
            raise _failure(ref, exc, name) from None
        why = cache.damage(storage, Path(pointer), listing[name], cancel)
        if why:
            raise ChecksumError(f"the download of {name} from {ref.display} does not match the hash the Hub lists "
                                f"({why.removeprefix('was damaged ').strip('()')}); nothing was kept")  # fmt: skip


def _bar_class(ref: HubRef, total: int | None, progress: Progress | None, cancel: Cancel | None):
    """A progress-bar class for ``huggingface_hub`` to report bytes to: it adds up the bytes
    of all files, tells ``progress`` and raises :class:`DownloadCancelled` at Cancel."""
    done = [0]

    class Bar:
        def __init__(self, *args, initial: int = 0, **kwargs) -> None:
            if initial:
                self.update(initial)

        def update(self, n: int | float | None = 1) -> None:
            done[0] += int(n or 0)
            if cancel is not None and cancel():
                raise DownloadCancelled(f"download of {ref.display} cancelled")
            if progress:
                progress(done[0], total)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

        def _ignore(self, *args, **kwargs) -> None:
            return None

        close = refresh = reset = clear = set_description = set_description_str = set_postfix_str = _ignore

    return Bar


@contextlib.contextmanager
def _plain_transfers():
    """While the app downloads: plain HTTP(S) transfers (not Xet's native transfer), read in
    ``CHUNK`` pieces, so that every piece passes through the progress bar, and so through
    the Cancel check, in this thread.  These two settings are read at each call; nothing
    else in the app downloads with ``huggingface_hub``."""
    from huggingface_hub import constants

    with _transfers:
        saved = constants.HF_HUB_DISABLE_XET, constants.DOWNLOAD_CHUNK_SIZE
        constants.HF_HUB_DISABLE_XET, constants.DOWNLOAD_CHUNK_SIZE = True, CHUNK
        try:
            yield
        finally:
            constants.HF_HUB_DISABLE_XET, constants.DOWNLOAD_CHUNK_SIZE = saved


# -- errors in one line -------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    code = getattr(getattr(exc, "response", None), "status_code", None)
    return code if isinstance(code, int) else None


def _failure(ref: HubRef, exc: BaseException, name: str) -> WeightsError:
    """The one line for what went wrong talking to the Hub (``name``: the file being fetched)."""
    from huggingface_hub import errors as hub_errors

    where = endpoint()
    chain, seen = [], set()
    x: BaseException | None = exc
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        chain.append(x)
        x = x.__cause__ or x.__context__
    for x in chain:
        status = _status(x) if isinstance(x, hub_errors.HfHubHTTPError) else None
        if isinstance(x, WeightsError):
            return x
        if isinstance(x, hub_errors.GatedRepoError):
            return WeightsError(f"{ref.display} is gated: accept its conditions on its page at {where}, then "
                                f"{TOKEN_HINT}" + (" (the token set now has no access yet)" if _token() else ""))  # fmt: skip
        if isinstance(x, hub_errors.RevisionNotFoundError):
            return WeightsError(f"{ref.display}: the model has no revision {ref.revision or 'main'!r}")
        if isinstance(x, hub_errors.RemoteEntryNotFoundError):
            return WeightsError(
                f"{ref.display}: the Hub no longer has {name or 'a file it listed'}; try again"
            )
        if status in (401, 403, 404):
            if _token():
                return WeightsError(f"no model {ref.repo_id} on the Hugging Face Hub ({where}) that the token in "
                                    "HF_TOKEN gives access to; check the name and the token")  # fmt: skip
            return WeightsError(f"no model {ref.repo_id} on the Hugging Face Hub ({where}); check the name (a "
                                f"private or gated model needs a token: {TOKEN_HINT})")  # fmt: skip
        if status is not None:
            return WeightsError(f"the Hugging Face Hub answered {status} for {ref.display}; try again later")
        if isinstance(x, OSError) and x.errno == errno.ENOSPC:
            return WeightsError(f"the disk filled up while downloading {name} of {ref.display} into "
                                f"{display(str(cache_dir()))}; nothing was kept")  # fmt: skip
        if isinstance(x, hub_errors.OfflineModeIsEnabled):
            return OfflineError(f"{ref.display} is not in the Hugging Face cache and offline mode is on")
        if _network(x):
            what = f"the download of {name} from {ref.display} broke off" if name else f"cannot reach {where}"
            return OfflineError(f"{what}: no network ({brief(str(x) or type(x).__name__, 100)})")
        if isinstance(x, PermissionError):
            return WeightsError(f"cannot write to the Hugging Face cache {display(str(cache_dir()))}: "
                                f"{x.strerror or x}")  # fmt: skip
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return ChecksumError(f"the download of {name} from {ref.display} was cut short; nothing was kept")
    doing = f"downloading {name}" if name else "asking the Hub about it"
    return WeightsError(f"{ref.display}: {doing} failed ({brief(str(exc) or type(exc).__name__, 120)})")


def _token() -> bool:
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # a token store that cannot be read counts as no token
        return False


def _network(exc: BaseException) -> bool:
    """A failure to reach the server (no route, refused, timed out, cut off)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    kinds = []
    for mod in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            kinds.append(__import__(mod).TransportError)
    return bool(kinds) and isinstance(exc, tuple(kinds))
