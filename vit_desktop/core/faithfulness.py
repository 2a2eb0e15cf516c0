"""How faithful a map is: deletion and insertion curves over the patch grid.

For one preprocessed image, a map over its patch grid and a target class:

* **deletion**: remove the patches in the map's order (highest value first), a fraction
  0, 5%, 10%, … 100% of them at a time, and record the target class's probability after
  each step: a faithful map makes it fall fast (a low area under the curve);
* **insertion**: start from an image with every patch removed and reveal the patches in the
  same order: a faithful map makes the probability rise fast (a high area).

A removed patch's pixels are set to the normalisation mean, i.e. 0 in the normalised input
the model takes (the model-input patch grid: ``clf.preprocessing.patch_size`` pixels a side,
the grid being the map's shape).  After step k, round(f_k × P) of the P patches are removed
(deletion) or shown (insertion).  The areas are the trapezoid rule over the fractions (0–1,
so an area is a mean probability).  The same curves for a random patch order (seeded) are
the baseline a map must beat.  The forwards run batched on ``clf.module`` in float32 (never
fast mode's low-precision copy) on the classifier's device, and ``cancel`` is checked
between batches (:class:`.explain.Cancelled`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .explain_methods import Cancelled

if TYPE_CHECKING:
    from .classifier import Classifier

Cancel = Callable[[], bool]

#: Perturbed images per forward pass for a model of up to :data:`BATCH_TOKENS` tokens; fewer
#: for longer sequences (the attention's memory grows with the square of the tokens).
BATCH = 32
BATCH_TOKENS = 200

__all__ = ["Faithfulness", "area", "curves", "fractions_for", "map_order", "perturbed_probs", "random_order"]


def _frozen(a, dtype=np.float32) -> np.ndarray:
    out = np.array(a, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Faithfulness:
    """The deletion and insertion curves of one map for one target class, and the same for a
    random patch order (drawn from ``random_seed``).  ``fractions``: read-only float64, the
    share of patches removed (deletion) or shown (insertion) at each step; curves: read-only
    float32, the target's probability at each step; areas: floats (trapezoid rule)."""

    target: int
    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    random_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", _frozen(self.fractions, np.float64))
        for name in ("deletion", "insertion", "random_deletion", "random_insertion"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def deletion_auc(self) -> float:
        return area(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return area(self.fractions, self.insertion)

    @property
    def random_deletion_auc(self) -> float:
        return area(self.fractions, self.random_deletion)

    @property
    def random_insertion_auc(self) -> float:
        return area(self.fractions, self.random_insertion)

    def to_dict(self) -> dict:
        """Everything as JSON-ready numbers (curves rounded to 6 places)."""
        out: dict = {
            "target": self.target,
            "random_seed": self.random_seed,
            "fractions": [round(float(f), 6) for f in self.fractions],
        }
        for name in ("deletion", "insertion", "random_deletion", "random_insertion"):
            out[name] = [round(float(v), 6) for v in getattr(self, name)]
            out[f"{name}_auc"] = round(getattr(self, f"{name}_auc"), 6)
        return out


def area(fractions: np.ndarray, values: np.ndarray) -> float:
    """The area under ``values`` over ``fractions`` by the trapezoid rule."""
    x = np.asarray(fractions, np.float64)
    y = np.asarray(values, np.float64)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def fractions_for(step: float) -> np.ndarray:
    """0, step, 2·step, … up to 1 (1 always included, last)."""
    if not (isinstance(step, (int, float)) and math.isfinite(step) and 0.0 < step <= 1.0):
        raise ValueError(f"the step must be a fraction above 0 and at most 1, not {step!r}")
    n = math.ceil(1.0 / step - 1e-9)
    return np.minimum(np.arange(n + 1, dtype=np.float64) * step, 1.0)


def map_order(grid_map: np.ndarray) -> np.ndarray:
    """The patches (flat row-major indices) from the map's highest value to its lowest; equal
    values keep grid order."""
    flat = np.asarray(grid_map, np.float64).reshape(-1)
    if flat.size == 0 or not np.isfinite(flat).all():
        raise ValueError("the map must be a non-empty grid of finite values")
    return np.argsort(-flat, kind="stable")


def random_order(patches: int, seed: int = 0) -> np.ndarray:
    """A random order of ``patches`` patches, the same for the same seed."""
    return np.random.default_rng(seed).permutation(patches)


def _default_batch(tokens: int) -> int:
    return max(1, min(BATCH, int(BATCH * (BATCH_TOKENS / max(tokens, 1)) ** 2)))


def _check_grid(clf: Classifier, batch: torch.Tensor, grid: tuple[int, int]) -> int:
    p = int(clf.preprocessing.patch_size)
    rows, cols = grid
    if batch.ndim != 4 or batch.shape[0] != 1 or batch.shape[1] != 3:
        raise ValueError(f"expected one preprocessed image (1, 3, H, W), got {tuple(batch.shape)}")
    if (rows * p, cols * p) != tuple(batch.shape[-2:]):
        h, w = batch.shape[-2:]
        raise ValueError(f"a {rows}×{cols} map of {p}-px patches does not tile the {w}×{h} input")
    return p


def perturbed_probs(clf: Classifier, batch: torch.Tensor, order: np.ndarray, grid: tuple[int, int],
                    fractions: np.ndarray, *, cancel: Cancel | None = None,
                    batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Every class's probability after each deletion and insertion step of ``order`` (flat
    patch indices, first removed/shown first): two (steps, classes) float32 arrays."""
    p = _check_grid(clf, batch, grid)
    rows, cols = grid
    n = rows * cols
    order = np.asarray(order, np.int64).reshape(-1)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"the order must name each of the {n} patches once")
    counts = np.rint(np.asarray(fractions, np.float64) * n).astype(np.int64)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    shown = rank[None, :] < counts[:, None]  # (steps, P): the first counts[k] patches of the order
    keep = np.concatenate([~shown, shown]).reshape(-1, rows, cols)  # deletion steps, then insertion
    bs = batch_size or _default_batch(n + 1)
    if bs < 1:
        raise ValueError(f"batch_size must be at least 1, not {bs}")
    device = clf.device
    x = batch.to(device, dtype=torch.float32)
    module = clf.module
    out = []
    with torch.inference_mode():
        for start in range(0, len(keep), bs):
            if cancel is not None and cancel():
                raise Cancelled("the faithfulness curves were cancelled")
            k = torch.from_numpy(keep[start : start + bs]).to(device)
            pix = k.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)  # (b, H, W)
            logits = module(x * pix[:, None].to(x.dtype))
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
    probs = torch.cat(out).numpy().astype(np.float32)
    return probs[: len(counts)], probs[len(counts) :]


def curves(clf: Classifier, batch: torch.Tensor, grid_map: np.ndarray, target: int, *, step: float = 0.05,
           random_seed: int = 0, cancel: Cancel | None = None, batch_size: int | None = None,
           baseline: Faithfulness | None = None) -> Faithfulness:  # fmt: skip
    """The deletion and insertion curves of ``grid_map`` (rows, cols) for class ``target`` on
    one preprocessed image ``batch`` (1, 3, H, W), with the random-order baseline (patch order
    from ``random_seed``).  ``baseline``: curves already computed for the same image, target,
    step and seed, whose random curves are reused instead of computed again."""
    grid_map = np.asarray(grid_map)
    if grid_map.ndim != 2:
        raise ValueError(f"the map must be a (rows, cols) grid, got shape {grid_map.shape}")
    fractions = fractions_for(step)
    target = int(target)
    deletion, insertion = perturbed_probs(clf, batch, map_order(grid_map), grid_map.shape, fractions,
                                          cancel=cancel, batch_size=batch_size)  # fmt: skip
    if not 0 <= target < deletion.shape[1]:
        raise ValueError(f"target class {target} out of range for {deletion.shape[1]} classes")
    same = baseline is not None and (baseline.target, baseline.random_seed) == (target, random_seed)
    if same and np.array_equal(baseline.fractions, fractions):
        rand_del, rand_ins = baseline.random_deletion, baseline.random_insertion
    else:
        rd, ri = perturbed_probs(clf, batch, random_order(grid_map.size, random_seed), grid_map.shape,
                                 fractions, cancel=cancel, batch_size=batch_size)  # fmt: skip
        rand_del, rand_ins = rd[:, target], ri[:, target]
    return Faithfulness(
        target, fractions, deletion[:, target], insertion[:, target], rand_del, rand_ins, random_seed
    )
