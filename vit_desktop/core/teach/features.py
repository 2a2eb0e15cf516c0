"""Features of a folder of examples from a frozen backbone, cached per image.

For every image the backbone's blocks run once (no attention capture) and two kinds of
arrays can be kept:

* ``blocks``: every block's output reduced to the query token and the mean of the patch
  tokens, (depth, 2, D) float32 — what the linear and multi-layer heads read
  (:class:`.families.taught.FeatureSpec` picks from it);
* ``tokens@S``: every token entering block ``S``, (N, D) float32 — what fine-tuning the
  blocks from ``S`` on starts from.

Each array is a file in the cache folder named by a key of the image's content (SHA-256),
the backbone's identity (its weights' SHA-256), the preprocessing, what is kept, and for an
augmented copy its number and the seed.  So teaching again after adding images or changing a
setting computes only what is new.  Augmented copies (:func:`augment`: a flip, a small
rotation, a crop, colour jitter — drawn from the seed, the image and the copy number) are
decoded, changed and run like any image.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from ..classifier import Classifier, Prepared, iter_prepared
from ..explain_model import Parts, parts_of
from ..families.taught import query_and_mean
from ..images import load_image
from ..preprocess import prepare
from ..results import ImageFailure
from .dataset import TeachCancelled

#: Bumped when what an augmented copy looks like changes (old cached copies are not reused).
AUGMENT_VERSION = 1

Progress = Callable[[str, int, int], None]


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/vit-desktop/features`` (``~/.cache/…``); ``VIT_DESKTOP_FEATURE_CACHE`` overrides."""
    env = os.environ.get("VIT_DESKTOP_FEATURE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "vit-desktop", "features")


@dataclass(frozen=True)
class Item:
    """One image to run: a file, and 0 for itself or k ≥ 1 for its k-th augmented copy."""

    path: str
    digest: str
    copy: int = 0

    def __fspath__(self) -> str:
        return self.path


def augment(img: Image.Image, seed: int, digest: str, copy: int) -> Image.Image:
    """The ``copy``-th augmented version of ``img``: flipped half the time, rotated by up to
    ±15° (edges filled by the border colour), cropped to 80–100% of its area at a random
    place, brightness, contrast and saturation each scaled by 0.8–1.2."""
    rng = np.random.default_rng([seed, copy, int(digest[:15], 16), AUGMENT_VERSION])
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = float(rng.uniform(-15, 15))
    border = img.getpixel((0, 0))
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=border)
    w, h = img.size
    frac = float(np.sqrt(rng.uniform(0.8, 1.0)))
    cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(float(rng.uniform(0.8, 1.2)))
    return img


class FeatureCache:
    """The cached arrays of one backbone (``backbone_key``: :meth:`.identity.BackboneId.cache_key`)
    and preprocessing, in ``root``."""

    def __init__(self, clf: Classifier, backbone_key: str, root: Path | None = None) -> None:
        ident = {"backbone": backbone_key, "preprocessing": clf.preprocessing.to_dict(), "v": 1}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
        self.folder = (root or cache_root()) / key

    def path(self, kind: str, item: Item, seed: int) -> Path:
        name = item.digest if item.copy == 0 else f"{item.digest}-a{AUGMENT_VERSION}s{seed}c{item.copy}"
        return self.folder / kind.replace("@", "-") / f"{name}.npy"

    def get(self, kind: str, item: Item, seed: int) -> np.ndarray | None:
        try:
            return np.load(self.path(kind, item, seed), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, kind: str, item: Item, seed: int, array: np.ndarray) -> None:
        """Written to a new file then renamed over: a crash never leaves a torn array.  A
        cache that cannot be written (read-only, disk full) is only slower: not an error."""
        target = self.path(kind, item, seed)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, target)
        except OSError:
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass


def _block_features(
    parts: Parts, x: torch.Tensor, tokens_at: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(B, depth, 2, D) query and patch-mean of every block's output, and the tokens entering
    block ``tokens_at`` (B, N, D) when asked."""
    h = parts.embed(x)
    feats, kept = [], None
    for i, blk in enumerate(parts.blocks):
        if i == tokens_at:
            kept = h.float().cpu().numpy()
        h = blk(h)
        feats.append(query_and_mean(h, parts.layout))
    return torch.stack(feats, dim=1).float().cpu().numpy(), kept


@dataclass
class Extracted:
    """Per item: ``blocks`` (depth, 2, D) and, when asked, ``tokens`` (N, D); failures by path."""

    blocks: dict[Item, np.ndarray]
    tokens: dict[Item, np.ndarray]
    failures: dict[str, str]
    computed: int  # images that ran through the backbone (the rest came from the cache)


def extract(clf: Classifier, cache: FeatureCache, items: Sequence[Item], seed: int = 0, *,
            tokens_at: int | None = None, progress: Progress | None = None,
            cancel: Callable[[], bool] | None = None, batch_size: int = 8) -> Extracted:  # fmt: skip
    """The arrays of every item, from the cache or computed (decoded on the folder run's
    decode pool, batches of ``batch_size``).  A file that cannot be decoded is a failure (its
    one-line reason) and the others go on."""
    parts = parts_of(clf.module)
    kinds = ["blocks"] + ([f"tokens@{tokens_at}"] if tokens_at is not None else [])
    out = Extracted({}, {}, {}, 0)
    todo = []
    for item in items:
        arrays = [cache.get(kind, item, seed) for kind in kinds]
        if all(a is not None for a in arrays):
            out.blocks[item] = arrays[0]
            if tokens_at is not None:
                out.tokens[item] = arrays[1]
        else:
            todo.append(item)
    total, done = len(items), len(items) - len(todo)
    if progress is not None:
        progress("features", done, total)

    def prep(item: Item) -> Prepared:
        loaded = load_image(item.path, max_pixels=clf.max_pixels, min_size=clf.preprocessing.resized_size)
        img = loaded.image if item.copy == 0 else augment(loaded.image, seed, item.digest, item.copy)
        arr, geom = prepare(img, clf.preprocessing, img.size)
        return Prepared(item.path, arr, geom, 0.0)

    queue = list(todo)
    for batch in iter_prepared(todo, prep, batch_size, cancel):
        ready = [(item, p) for item, p in zip(_take(queue, len(batch)), batch) if isinstance(p, Prepared)]
        for p in batch:
            if isinstance(p, ImageFailure):
                out.failures[p.source] = p.error
        if ready:
            x = torch.from_numpy(np.stack([p.array for _, p in ready])).to(clf.device)
            with torch.inference_mode():
                feats, kept = _block_features(parts, x, tokens_at)
            for j, (item, _) in enumerate(ready):
                out.blocks[item] = feats[j]
                cache.put("blocks", item, seed, feats[j])
                if kept is not None:
                    out.tokens[item] = kept[j]
                    cache.put(kinds[1], item, seed, kept[j])
            out.computed += len(ready)
        done += len(batch)
        if progress is not None:
            progress("features", done, total)
    if cancel is not None and cancel():
        raise TeachCancelled("cancelled")
    return out


def _take(queue: list, n: int) -> list:
    """The first ``n`` items of ``queue``, removed from it (the batches come in input order)."""
    head = queue[:n]
    del queue[:n]
    return head
