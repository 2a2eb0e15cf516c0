"""Training a head: a linear layer on standardised features (L-BFGS, weight decay chosen by
cross-validation), and fine-tuning the last blocks with it (Adam, a few epochs).

Rows are images and their augmented copies; ``groups`` names the image a row comes from, so
a copy never sits in one fold while its image sits in another, and only the images
themselves (``original`` rows) are ever scored.  Everything is seeded: the same data and seed
give the same head.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: Weight decays tried (the penalty ``wd · ‖W‖²`` on the mean cross-entropy of standardised
#: features); the one with the best cross-validated accuracy wins (ties: the lower loss).
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
INNER_FOLDS = 3
MAX_ITER = 150  # L-BFGS iterations per fit (each fit on the decay path starts from the last)


@dataclass(frozen=True)
class LinearHead:
    weight: np.ndarray  # (C, F) on standardised features
    bias: np.ndarray  # (C,)
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)
    weight_decay: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-6 * max(float(np.abs(x).max(initial=0.0)), 1.0))
    return mean.astype(np.float32), std.astype(np.float32)


def fit_linear(x: np.ndarray, y: np.ndarray, classes: int, weight_decay: float,
               start: LinearHead | None = None) -> LinearHead:  # fmt: skip
    """The head minimising mean cross-entropy + ``weight_decay`` · ‖W‖² (L-BFGS, full batch,
    float64, deterministic), from zeros or from ``start`` (a head for a larger decay on the
    same features: the path from strong to weak decay converges in a few steps each)."""
    mean, std = (start.mean, start.std) if start is not None else standardiser(x)
    xs = torch.from_numpy((x - mean) / std).double()
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    if start is None:
        w = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    else:
        w = torch.tensor(start.weight, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(start.bias, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=MAX_ITER, history_size=20, tolerance_grad=1e-7,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w.T + b, yt) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearHead(w.detach().float().numpy(), b.detach().float().numpy(), mean, std, weight_decay)


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds of indices into ``y``, each class spread evenly over them (seeded)."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(offset + j) % k].append(int(i))
        offset += len(idx)
    return [np.array(sorted(f), dtype=np.int64) for f in folds]


@dataclass(frozen=True)
class Rows:
    """Feature rows: ``x`` (M, F), ``y`` (M,), ``group`` (M,) image index, ``original`` (M,)."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    original: np.ndarray

    def of(self, groups: np.ndarray, originals_only: bool = False) -> Rows:
        keep = np.isin(self.group, groups)
        if originals_only:
            keep &= self.original
        return Rows(self.x[keep], self.y[keep], self.group[keep], self.original[keep])

    def image_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The images' indices and labels (one per image)."""
        return self.group[self.original], self.y[self.original]


def choose_weight_decay(rows: Rows, classes: int, seed: int, grid: Sequence[float] = WEIGHT_DECAYS) -> float:
    """The decay with the best accuracy over :data:`INNER_FOLDS` folds of the images (ties:
    the lower cross-entropy); the largest when there are too few images to fold."""
    groups, labels = rows.image_labels()
    k = min(INNER_FOLDS, int(np.bincount(labels).min())) if len(labels) else 0
    if k < 2 or len(grid) == 1:
        return max(grid)
    folds = stratified_folds(labels, k, seed + 7)
    right, loss = dict.fromkeys(grid, 0), dict.fromkeys(grid, 0.0)
    for fold in folds:
        val = groups[fold]
        train = rows.of(np.setdiff1d(groups, val))
        test = rows.of(val, originals_only=True)
        head = None
        for wd in sorted(grid, reverse=True):
            head = fit_linear(train.x, train.y, classes, wd, head)
            z = head.logits(test.x).astype(np.float64)
            right[wd] += int((z.argmax(axis=1) == test.y).sum())
            z -= z.max(axis=1, keepdims=True)
            loss[wd] += float((np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), test.y]).sum())
    return max((right[wd], -loss[wd], wd) for wd in grid)[2]


def fit_linear_auto(rows: Rows, classes: int, seed: int, grid: Sequence[float] = WEIGHT_DECAYS) -> LinearHead:
    """:func:`fit_linear` with the decay :func:`choose_weight_decay` picks (reached along the
    decay path, as in the choice)."""
    chosen = choose_weight_decay(rows, classes, seed, grid)
    head = None
    for wd in sorted(grid, reverse=True):
        if wd >= chosen:
            head = fit_linear(rows.x, rows.y, classes, wd, head)
    return head


# -- fine-tuning the last blocks -------------------------------------------------------------


@dataclass
class Tuned:
    """Fine-tuned copies of the last blocks and the head on their output's features."""

    blocks: list[nn.Module]
    head: LinearHead
    features: Callable[[torch.Tensor], torch.Tensor]  # tokens after the blocks → (B, F)

    def logits(self, tokens: np.ndarray, batch: int = 64) -> np.ndarray:
        out = []
        w, b = torch.from_numpy(self.head.weight), torch.from_numpy(self.head.bias)
        mean, std = torch.from_numpy(self.head.mean), torch.from_numpy(self.head.std)
        with torch.inference_mode():
            for s in range(0, len(tokens), batch):
                h = torch.from_numpy(tokens[s : s + batch])
                for blk in self.blocks:
                    h = blk(h)
                out.append(((self.features(h) - mean) / std) @ w.T + b)
        return torch.cat(out).numpy()


def fine_tune(blocks: Sequence[nn.Module], features: Callable[[torch.Tensor], torch.Tensor],
              tokens: np.ndarray, y: np.ndarray, start: LinearHead, classes: int, *, epochs: int = 12,
              lr: float = 1e-4, head_lr: float = 1e-3, batch: int = 32, seed: int = 0,
              on_epoch: Callable[[int, int], None] | None = None) -> Tuned:  # fmt: skip
    """Copies of ``blocks`` and a head started from ``start`` trained together with Adam on
    ``tokens`` (M, N, D): the tokens entering the first of the blocks.  ``on_epoch(done,
    epochs)`` after each epoch (it may raise to stop)."""
    torch.manual_seed(seed)
    tuned = [copy.deepcopy(b).float().cpu().train() for b in blocks]
    w = torch.tensor(start.weight, requires_grad=True)
    b = torch.tensor(start.bias, requires_grad=True)
    mean, std = torch.from_numpy(start.mean), torch.from_numpy(start.std)
    params = [p for blk in tuned for p in blk.parameters()]
    opt = torch.optim.Adam([{"params": params, "lr": lr}, {"params": [w, b], "lr": head_lr}])
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.from_numpy(tokens), torch.from_numpy(np.asarray(y, dtype=np.int64))
    wd = start.weight_decay
    with torch.enable_grad():
        for epoch in range(epochs):
            order = torch.randperm(len(y_all), generator=gen)
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                h = x_all[idx]
                for blk in tuned:
                    h = blk(h)
                logits = ((features(h) - mean) / std) @ w.T + b
                loss = F.cross_entropy(logits, y_all[idx]) + wd * (w * w).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs)
    for blk in tuned:
        blk.eval()
        blk.requires_grad_(False)
    head = LinearHead(w.detach().numpy().copy(), b.detach().numpy().copy(), start.mean, start.std, wd)
    return Tuned(tuned, head, features)
