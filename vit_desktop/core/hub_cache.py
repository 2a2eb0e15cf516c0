"""The Hugging Face cache as :mod:`.hub` uses it: where it is, which commit a branch named,
and whether a cached file is what the Hub listed.

The cache is ``huggingface_hub``'s own (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``): one folder per repository with ``refs/BRANCH`` (a commit),
``blobs/HASH`` (each file once, named by its SHA-256 when it is a large LFS file, by its git
blob SHA-1 otherwise), ``snapshots/COMMIT/NAME`` (links to the blobs, or copies where links
cannot be made) and ``trees/COMMIT.json`` (the commit's file listing with those hashes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptCacheError, DownloadCancelled, OfflineError, WeightsError
from .text import brief, display

Cancel = Callable[[], bool]

CONFIG, PREPROCESSOR = "config.json", "preprocessor_config.json"
WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle")
COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
MISSING = "missing"

log = logging.getLogger("vit_desktop.hub")


@dataclass(frozen=True)
class Want:
    """What a file must hash to: ``kind`` "sha256" (a large LFS file) or "git" (the git blob
    SHA-1 of a small file: ``sha1(b"blob SIZE\\0" + content)``), and its size when known."""

    kind: str
    digest: str
    size: int | None = None
    blob_id: str | None = None  # the git object id the listing gives (for an LFS file: its pointer's)


def cache_dir() -> Path:
    """The Hugging Face cache, found the way ``huggingface_hub`` finds it (read now, so a
    changed ``HF_HOME`` counts)."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(hub)))


def named_want(name: str) -> Want | None:
    """The hash a blob's file name states, if it is one."""
    if SHA256.fullmatch(name):
        return Want("sha256", name)
    if COMMIT.fullmatch(name):
        return Want("git", name)
    return None


def file_hash(path: Path, kind: str, size: int, cancel: Cancel | None = None) -> str:
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            if cancel is not None and cancel():
                raise DownloadCancelled(f"cancelled while checking {path.name}")
    return h.hexdigest()


#: What :func:`damage` says of a cached file whose hash is known neither from a listing nor from
#: its blob's name: it is left where it is, and not used.
UNVERIFIED = "has no known hash to be checked against"


def damage(storage: Path, pointer: Path, want: Want | None, cancel: Cancel | None = None) -> str:
    """Check the cached file ``pointer`` (a snapshot entry of the repository folder ``storage``)
    against ``want`` (the listing's hash) and the hash its blob is named by: "" when it
    matches, :data:`MISSING` when it is not there, :data:`UNVERIFIED` when no hash is known for
    it (it is left alone), else why it is damaged; a damaged file is removed, blob and all."""
    if not pointer.is_file():
        return MISSING
    real = Path(os.path.realpath(pointer))
    blobs = Path(os.path.realpath(storage / "blobs"))
    wants = [want] if want is not None else []
    named = named_want(real.name) if real.parent == blobs else None
    wants += [named] if named is not None else []
    if not wants:  # not proven damaged: never removed (it may be another program's file)
        return UNVERIFIED
    why = ""
    try:
        size = real.stat().st_size
        for w in wants:
            if w.size is not None and size != w.size:
                why = f"is {size} bytes instead of {w.size}"
                break
            got = file_hash(real, w.kind, size, cancel)
            if got != w.digest:
                what = "SHA-256" if w.kind == "sha256" else "git blob SHA-1"
                why = f"was damaged (its {what} is {got[:12]}…, not {w.digest[:12]}…)"
                break
    except OSError as exc:
        raise WeightsError(
            f"the cached {display(pointer.name)} ({display(str(real))}) cannot be read: {exc.strerror or exc}"
        ) from None
    if why:
        for p in (pointer, real if real.parent == blobs else None):
            if p is not None:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    return why


def read_ref(storage: Path, revision: str) -> str | None:
    """The commit ``revision`` names in the cache (a commit names itself)."""
    if COMMIT.fullmatch(revision):
        return revision
    try:
        commit = (storage / "refs" / revision).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if COMMIT.fullmatch(commit) else None


def write_ref(storage: Path, revision: str, commit: str) -> None:
    """``refs/REVISION``: the commit a branch or tag names now, for use without the network."""
    if revision == commit or read_ref(storage, revision) == commit:
        return
    ref = storage / "refs" / revision
    tmp = ref.with_name(f"{ref.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(commit, encoding="ascii")
        os.replace(tmp, ref)
    except OSError as exc:
        log.warning("cannot record %s of %s: %s", revision, storage, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def remember_listing(storage: Path, commit: str, listing: dict[str, Want]) -> None:
    """The commit's listing in the cache's ``trees/COMMIT.json`` (unless the cache has it),
    so files can be checked without the network where snapshots hold copies, not links."""
    try:
        from huggingface_hub._tree_cache import TreeCacheEntry, read_tree_cache, write_tree_cache
    except ImportError:
        return
    if read_tree_cache(str(storage), commit) is not None:
        return
    entries = {}
    for path, w in listing.items():
        lfs = w.kind == "sha256"
        entries[path] = TreeCacheEntry(size=w.size or 0, blob_id=w.blob_id or ("" if lfs else w.digest),
                                       lfs_sha256=w.digest if lfs else None, lfs_size=w.size if lfs else None)  # fmt: skip
    write_tree_cache(str(storage), commit, entries)


def remembered_listing(storage: Path, commit: str) -> dict[str, Want]:
    """The listing the cache keeps for ``commit`` (empty when it has none)."""
    try:
        from huggingface_hub._tree_cache import read_tree_cache
    except ImportError:
        return {}
    out = {}
    for path, e in (read_tree_cache(str(storage), commit) or {}).items():
        if e.lfs_sha256:
            out[path] = Want("sha256", str(e.lfs_sha256).lower(), e.lfs_size, e.blob_id)
        elif e.blob_id:
            out[path] = Want("git", str(e.blob_id).lower(), e.size, e.blob_id)
    return out


def shards(model: str, index: Path, listing: dict[str, Want] | None = None) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names (each a file of ``listing``,
    when given); ``model``: the model's name for the message."""
    try:
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{model}: {INDEX} cannot be read ({brief(str(exc))})") from None
    ok = [s for s in names if isinstance(s, str) and s.endswith(".safetensors") and "/" not in s
          and (listing is None or s in listing)]  # fmt: skip
    if not names or len(ok) != len(names):
        raise WeightsError(f"{model}: {INDEX} names shards that are not safetensors files of the model")
    return ok


def snapshot(model: str, storage: Path, revision: str | None, why: str, cancel: Cancel | None = None) -> Path:
    """The cached snapshot of ``model`` (its repository folder ``storage``) at ``revision``
    (None: the default branch), each file it needs checked (against the listing the cache
    kept, and the hash its blob is named by).  Not all there: :class:`OfflineError` saying
    so and ``why`` it cannot be downloaded now; a damaged file: :class:`CorruptCacheError`."""
    commit = read_ref(storage, revision or "main")
    folder = storage / "snapshots" / (commit or "-")
    names = [n for n in (CONFIG, PREPROCESSOR, WEIGHTS, INDEX) if commit and (folder / n).is_file()]
    if CONFIG not in names or not {WEIGHTS, INDEX} & set(names):
        if names and any(p.name.lower().endswith(PICKLES) for p in folder.iterdir()):
            raise WeightsError(f"{model}: the cached copy has no safetensors weights and {why}")
        raise OfflineError(
            f"{model} is not in the Hugging Face cache ({display(str(cache_dir()))}) and {why}"
        )
    if WEIGHTS in names and INDEX in names:
        names.remove(INDEX)
    elif INDEX in names:
        names += shards(model, folder / INDEX)
    listing = remembered_listing(storage, commit or "")
    for name in names:
        reason = damage(storage, folder / name, listing.get(name), cancel)
        if reason == MISSING:
            raise OfflineError(f"{model}: {name} is not in the Hugging Face cache and {why}")
        if reason == UNVERIFIED:
            raise OfflineError(f"{model}: the cached {name} cannot be checked (no hash is known for it) "
                               f"and {why}; open it once with the network on")  # fmt: skip
        if reason:
            raise CorruptCacheError(f"the cached {name} of {model} {reason} and has been removed; it is "
                                    "downloaded again when the model is next opened with the network on")  # fmt: skip
    return folder
