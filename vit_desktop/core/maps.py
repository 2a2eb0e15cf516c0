"""Attention maps from a captured result, in numpy, without the model.

All maps are (rows, cols) float32 arrays over the patch grid, taken from an
:class:`~vit_desktop.core.results.AttentionResult` (CLS rows, queries and keys):

* :func:`cls_map` — the CLS token's attention to every patch, one head or fused heads;
* :func:`token_map` — the same for any patch token's row (the app's hover view);
* :func:`rollout_map` — attention rollout (Abnar & Zuidema 2020): per layer, heads fused,
  the lowest ``discard_ratio`` of entries dropped, the identity added for the residual
  path, rows renormalised, and the layers multiplied.  Only the source token's row of the
  product is needed, so it is computed as a row vector through the layers in reverse
  order: N² per layer instead of N³, and no N×N product kept.

Nothing here hard-codes a grid: 7×7, 14×14, 24×24 and 37×37 all go through the same code.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import defaults
from .results import AttentionResult

FUSIONS = ("mean", "max", "min")
KINDS = ("cls", "rollout")


@dataclass(frozen=True)
class MapSpec:
    """What to draw: ``kind`` cls or rollout; ``layer`` (-1 last); ``head`` or ``fusion``."""

    kind: str = "cls"
    layer: int = -1
    head: int | None = None  # None: fuse heads with ``fusion``
    fusion: str = "mean"
    discard_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown map kind {self.kind!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown head fusion {self.fusion!r}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError("discard ratio must be in [0, 1)")


#: The map the command line reports the peak of, and the app shows first: attention
#: rollout, heads averaged, the lowest 90% of each layer's attention discarded (the setting
#: vit-explain made popular).  Measured on the demo model trained on single shapes, 500 held-out images:
#: its peak fell inside the shape 91.8% of the time, against 78% for the last layer's CLS
#: attention and 82% for rollout without discarding.  (The second-to-last layer's CLS
#: attention scored 92.4%, but which layer is best depends on the model; rollout does not.)
DEFAULT_MAP = MapSpec(kind=defaults.MAP_KIND, fusion=defaults.MAP_FUSION, discard_ratio=defaults.MAP_DISCARD)


def _fuse(a: np.ndarray, fusion: str, axis: int = 0) -> np.ndarray:
    if fusion == "mean":
        return a.mean(axis=axis)
    if fusion == "max":
        return a.max(axis=axis)
    return a.min(axis=axis)


def row_to_grid(row: np.ndarray, att: AttentionResult) -> np.ndarray:
    """A row over every token (N,) as the patch grid (rows, cols): prefix tokens dropped."""
    rows, cols = att.grid
    return np.ascontiguousarray(row[att.num_prefix_tokens :].reshape(rows, cols), dtype=np.float32)


def _layer(att: AttentionResult, layer: int) -> int:
    n = att.num_layers
    if not -n <= layer < n:
        raise IndexError(f"layer {layer} out of range for {n} layers")
    return layer % n


def head_rows(att: AttentionResult, layer: int, token: int | None = None) -> np.ndarray:
    """Attention of ``token`` to every token, per head: (H, N) float32.  ``token`` None: the
    model's query (the CLS token, or the mean of the patch tokens for a model without one)."""
    layer = _layer(att, layer)
    if token is None or (token == 0 and att.layout.query == "cls"):
        return att.cls[layer]
    if att.q is None or att.k is None:
        raise ValueError("this result kept only CLS attention; classify with attention='full'")
    q = att.q[layer, :, token].astype(np.float32)  # (H, d)
    k = att.k[layer].astype(np.float32)  # (H, N, d)
    logits = np.einsum("hd,hnd->hn", q, k) * (q.shape[-1] ** -0.5)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def token_map(att: AttentionResult, token: int | None, layer: int = -1, head: int | None = None,
              fusion: str = "mean") -> np.ndarray:  # fmt: skip
    rows = head_rows(att, layer, token)
    row = rows[head] if head is not None else _fuse(rows, fusion)
    return row_to_grid(row, att)


def cls_map(
    att: AttentionResult, layer: int = -1, head: int | None = None, fusion: str = "mean"
) -> np.ndarray:
    return token_map(att, None, layer, head, fusion)


def full_attention(att: AttentionResult, layer: int) -> np.ndarray:
    """Every head's full attention matrix of one layer: (H, N, N) float32."""
    if att.q is None or att.k is None:
        raise ValueError("this result kept only CLS attention; classify with attention='full'")
    q = att.q[layer].astype(np.float32)
    # Kᵀ made contiguous: numpy's stacked matmul on a transposed view skips BLAS and runs
    # ~250× slower (176 ms instead of 0.7 ms per ViT-B/16 layer), which froze the GUI.
    kt = np.ascontiguousarray(att.k[layer].astype(np.float32).transpose(0, 2, 1))
    logits = q @ kt * (q.shape[-1] ** -0.5)
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


#: Rollout's heads-fused matrices are kept for the last few results (the image on screen)
#: when they are small, so moving the discard slider or hovering patches does not recompute
#: every layer's softmax: ViT-B/16 takes ~2 MB per fusion; ViT-H/14 at 518 px (240 MB) is
#: never kept.
_FUSED_CACHE_MAX_BYTES = 64 << 20
_FUSED_CACHE_ENTRIES = 4
_fused_lock = threading.Lock()
_fused_cache: OrderedDict[tuple[int, str], tuple[weakref.ref, list[np.ndarray]]] = OrderedDict()


def fused_layer(att: AttentionResult, layer: int, fusion: str) -> np.ndarray:
    """One layer's heads-fused attention matrix (N, N) float32, cached for small models."""
    n, layers = att.num_tokens, att.num_layers
    if n * n * layers * 4 > _FUSED_CACHE_MAX_BYTES:
        return _fuse(full_attention(att, layer), fusion)
    key = (id(att), fusion)
    with _fused_lock:  # the worker (default peak) and the GUI thread (redraws) both come here
        hit = _fused_cache.get(key)
        if hit is None or hit[0]() is not att:  # an id can be reused once a result is gone
            hit = (weakref.ref(att), [None] * layers)
            _fused_cache[key] = hit
            while len(_fused_cache) > _FUSED_CACHE_ENTRIES:
                _fused_cache.popitem(last=False)
        else:
            _fused_cache.move_to_end(key)
    mats = hit[1]
    if mats[layer] is None:
        mats[layer] = _fuse(full_attention(att, layer), fusion).astype(np.float32)
    return mats[layer]


def rollout_layer(a: np.ndarray, fusion: str, discard_ratio: float, fused: bool = False) -> np.ndarray:
    """One layer's rollout factor from its (H, N, N) attention (or, with ``fused``, its
    heads-fused (N, N) matrix): fused, discarded, +I, renormalised."""
    fused = (a if fused else _fuse(a, fusion)).astype(np.float32, copy=True)
    n = fused.shape[-1]
    if discard_ratio > 0:
        flat = fused.reshape(-1)
        k = int(flat.size * discard_ratio)
        if k > 0:
            idx = np.argpartition(flat, k - 1)[:k]
            idx = idx[idx != 0]  # never drop the CLS token's attention to itself
            flat[idx] = 0.0
    fused = 0.5 * fused + 0.5 * np.eye(n, dtype=np.float32)
    fused /= fused.sum(axis=-1, keepdims=True)
    return fused


def rollout_row(att: AttentionResult, token: int | None = None, fusion: str = "mean",
                discard_ratio: float = 0.0, upto_layer: int = -1) -> np.ndarray:  # fmt: skip
    """Row ``token`` of the rollout product of layers 0…``upto_layer``: (N,) float32; ``token``
    None: the model's query (the CLS token, or the mean of the patch tokens' rows)."""
    last = _layer(att, upto_layer)
    v = np.zeros(att.num_tokens, np.float32)
    if token is None and att.layout.query == "mean":
        v[att.num_prefix_tokens :] = 1.0 / (att.num_tokens - att.num_prefix_tokens)
    else:
        v[token or 0] = 1.0
    for layer in range(last, -1, -1):
        v = v @ rollout_layer(fused_layer(att, layer, fusion), fusion, discard_ratio, fused=True)
    return v


def rollout_map(att: AttentionResult, fusion: str = "mean", discard_ratio: float = 0.0,
                token: int | None = None, upto_layer: int = -1) -> np.ndarray:  # fmt: skip
    return row_to_grid(rollout_row(att, token, fusion, discard_ratio, upto_layer), att)


def compute(att: AttentionResult, spec: MapSpec, token: int | None = None) -> np.ndarray:
    """The map ``spec`` describes, from ``token``'s point of view (None: the model's query,
    see :func:`head_rows`)."""
    if spec.kind == "rollout":
        if att.q is None:
            raise ValueError("rollout needs the full capture; classify with attention='full'")
        return rollout_map(att, spec.fusion, spec.discard_ratio, token, spec.layer)
    return token_map(att, token, spec.layer, spec.head, spec.fusion)


def peak_cell(grid_map: np.ndarray) -> tuple[int, int]:
    r, c = np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)
    return int(r), int(c)


def normalise(grid_map: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] for display (a flat map becomes zeros)."""
    lo, hi = float(grid_map.min()), float(grid_map.max())
    if hi - lo < 1e-12:
        return np.zeros_like(grid_map, dtype=np.float32)
    return ((grid_map - lo) / (hi - lo)).astype(np.float32)
