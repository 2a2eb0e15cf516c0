"""Explanation maps for the command line: ``classify --explain`` records and map files, and
``evaluate-maps``, which scores every method on a folder of images (and masks).

Scores, per method, over every (image, target class) pair:

* deletion and insertion AUC (:mod:`.faithfulness`), and the same for a random patch order;
* with a mask beside the image (``NAME.mask.png``, :mod:`.demo.samples`' convention: a
  greyscale label image, class index + 1 where that class's object is, 0 background), the
  targets are the classes in the mask and two segmentation scores are added:

  - **pointing game**: a hit when the map's highest patch holds at least one pixel of the
    target's mask;
  - **IoU** of the map thresholded at its mean (the patches above the mean) with the
    target's mask, on the patch grid: each patch counts with the share of its pixels inside
    the mask — the same as the pixel IoU, at model-input resolution, of the thresholded map
    drawn as blocks.  Only what the model saw counts (a letterbox's padding is background;
    a crop's lost borders are not scored).

  Without a mask the target is the top-1 class.  The mask is taken to the model-input
  pixels by the image's own :class:`.preprocess.Geometry` (nearest neighbour), so the scores
  follow every preprocessing mode.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import maps
from .capture import token_layout
from .demo.samples import is_mask_path, mask_path, read_mask
from .errors import VitDesktopError
from .explain import CLASS_SPECIFIC, Cancelled, explain, explain_image
from .faithfulness import area, fractions_for, map_order, perturbed_probs, random_order
from .overlay import overlay_path
from .preprocess import Geometry
from .results import AttentionResult
from .text import json_safe

__all__ = ["MapFileError", "MapScores", "check_methods", "coverage", "evaluate_maps", "explanation_records", "iou", "pointing_hit",
           "write_maps"]  # fmt: skip


class MapFileError(VitDesktopError):
    """A map file could not be written."""


def check_methods(clf, methods: Sequence[str]) -> None:
    """A ValueError of one line when ``clf``'s model cannot give one of ``methods`` (a family
    whose blocks are not known has no class-specific maps)."""
    if CLASS_SPECIFIC & set(methods):
        from .explain_model import parts_of

        parts_of(clf.module)


# -- classify --explain ---------------------------------------------------------------------------


def _map_name(out_dir: Path, source: str, n: int, key: str) -> Path:
    base = overlay_path(out_dir, source, n).name[: -len(".overlay.png")]
    return out_dir / f"{base}.{key}.npy"


def write_maps(out_dir: str | os.PathLike, source: str, grids: dict[str, np.ndarray]) -> dict[str, Path]:
    """Write each grid map as ``NAME.KEY.npy`` (float32) in ``out_dir``, one NAME for all of one
    image's maps: the image's name, else NAME-1, NAME-2, … where one of them is taken.  Files
    are created new, never over a file nor through a link.  Returns {key: path}."""
    out_dir = Path(out_dir)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for n in itertools.count():
        made: list[Path] = []
        written: dict[str, Path] = {}
        try:
            for key, grid in grids.items():
                path = _map_name(out_dir, source, n, key)
                fd = os.open(path, flags, 0o666)
                made.append(path)
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.asarray(grid, dtype=np.float32), allow_pickle=False)
                written[key] = path
        except FileExistsError:
            pass
        except OSError as exc:
            raise MapFileError(f"could not write the map file: {exc.strerror or exc}") from None
        finally:
            if len(written) != len(grids):  # a name taken, or a failure: no half set stays behind
                for path in made:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        if len(written) == len(grids):
            return written
    raise AssertionError("unreachable")  # itertools.count() does not end


def explanation_records(clf, res, methods: Sequence[str], targets: Sequence[str | int],
                        map_dir: str | os.PathLike | None = None) -> list[dict]:  # fmt: skip
    """The ``explanations`` of one classified image (a :class:`.results.ClassificationResult`):
    one object per method and target; with ``map_dir`` each raw map is written there too
    (``NAME.METHOD.npy`` for a class-agnostic method, once; ``NAME.METHOD.INDEX.npy`` for a
    class-specific one) and named in ``map_file``."""
    found = explain_image(clf, res.source, methods, targets, result=res)
    keys = [e.method if e.method not in CLASS_SPECIFIC else f"{e.method}.{e.target}" for e in found]
    files: dict[str, Path] = {}
    if map_dir is not None:
        files = write_maps(map_dir, res.source, {k: e.grid_map for k, e in zip(keys, found, strict=True)})
    out = []
    for k, e in zip(keys, found, strict=True):
        obj = e.to_dict(json_safe(str(files[k])) if k in files else None)
        obj["target"]["label"] = json_safe(obj["target"]["label"])
        out.append(obj)
    return out


def check_request(clf, methods: Sequence[str], targets: Sequence[str | int]) -> None:
    """Before any image: the model gives these methods' maps and has these classes; else a
    :class:`ValueError` naming the option (``--explain: …`` or ``--target: …``)."""
    from .explain import resolve_target

    try:
        check_methods(clf, methods)
    except ValueError as exc:
        raise ValueError(f"--explain: {exc}") from None
    probe = np.zeros(len(clf.labels), np.float32)
    for t in targets:  # a label the model does not have
        try:
            resolve_target(clf, probe, t)
        except ValueError as exc:
            raise ValueError(f"--target: {exc}") from None


def add_explanations(clf, res, obj: dict, problem: str | None, methods: Sequence[str],
                     targets: Sequence[str | int], map_dir: str | os.PathLike | None = None) -> str | None:  # fmt: skip
    """Add ``explanations`` (:func:`explanation_records`) to the record ``obj`` of the
    classified image ``res``, for both engines; a failure is added to ``problem`` (what is
    said of the image on stderr) and the classification stays.  Returns the problem."""
    from .errors import VitDesktopError

    if "error" in obj:
        return problem
    try:
        obj["explanations"] = explanation_records(clf, res, methods, targets, map_dir)
    except (VitDesktopError, ValueError, IndexError, OSError) as exc:
        why = f"explanations: {' '.join(str(exc).split())}"
        return f"{problem}; {why}" if problem else why
    return problem


# -- masks --------------------------------------------------------------------------------------


def coverage(labels: np.ndarray, geometry: Geometry) -> dict[int, np.ndarray]:
    """{class index: (rows, cols) float64}: the share of each patch's model-input pixels that
    belong to that class in the label image ``labels`` (original size; class index + 1, 0
    background), sampled at each model-input pixel's centre."""
    w, h = geometry.original_size
    if labels.shape != (h, w):
        raise ValueError(f"the mask is {labels.shape[1]}×{labels.shape[0]} px but the image is {w}×{h} px")
    in_w, in_h = geometry.input_size
    xs = np.floor((np.arange(in_w) + 0.5 + geometry.offset[0]) / geometry.scale[0]).astype(np.int64)
    ys = np.floor((np.arange(in_h) + 0.5 + geometry.offset[1]) / geometry.scale[1]).astype(np.int64)
    seen = np.zeros((in_h, in_w), labels.dtype)
    inside_x, inside_y = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    seen[np.ix_(inside_y, inside_x)] = labels[np.ix_(ys[inside_y], xs[inside_x])]
    rows, cols = geometry.patch_grid
    p = geometry.patch_size
    seen = seen[: rows * p, : cols * p].reshape(rows, p, cols, p)
    return {int(v) - 1: (seen == v).mean(axis=(1, 3)) for v in np.unique(labels) if v}


def pointing_hit(grid_map: np.ndarray, cover: np.ndarray) -> bool:
    """Whether the map's highest patch holds any of the target's pixels."""
    return bool(cover[maps.peak_cell(grid_map)] > 0)


def iou(grid_map: np.ndarray, cover: np.ndarray) -> float:
    """IoU of the patches above the map's mean with the target's mask (patches weighted by
    their share of mask pixels); a flat map selects nothing (0)."""
    m = np.asarray(grid_map, np.float64)
    chosen = m > m.mean()
    inter = float(cover[chosen].sum())
    union = float(chosen.sum()) + float(cover.sum()) - inter
    return inter / union if union > 0 else 0.0


# -- evaluate-maps ------------------------------------------------------------------------------


@dataclass
class _Sums:
    deletion: list[float] = field(default_factory=list)
    insertion: list[float] = field(default_factory=list)
    hits: list[float] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        def mean(v: list[float]) -> float | None:
            return round(float(np.mean(v)), 6) if v else None

        return {"deletion_auc": mean(self.deletion), "insertion_auc": mean(self.insertion),
                "pointing": mean(self.hits), "miou": mean(self.ious), "pairs": len(self.deletion),
                "mask_pairs": len(self.hits)}  # fmt: skip


@dataclass
class MapScores:
    """What :func:`evaluate_maps` measured: per method, and for the random order (whose
    ``pointing`` is the chance that a random patch hits the mask; it has no mIoU)."""

    model: str
    methods: tuple[str, ...]
    step: float
    seed: int
    images: int = 0
    with_masks: int = 0
    two_objects: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    sums: dict[str, _Sums] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "images": self.images, "images_with_masks": self.with_masks,
                "images_with_two_or_more_classes": self.two_objects, "failed": len(self.failures),
                "step": self.step, "random_seed": self.seed,
                "methods": {m: self.sums[m].summary() for m in self.methods},
                "random": self.sums["random"].summary()}  # fmt: skip

    def table(self) -> str:
        """The scores as a plain-text table."""

        def cell(v: float | None, pct: bool = False) -> str:
            return "-" if v is None else (f"{v * 100:.1f}%" if pct else f"{v:.3f}")

        lines = [f"{self.model}: {self.images} images ({self.with_masks} with masks, {self.two_objects} with "
                 f"two or more classes), step {self.step:g}, random seed {self.seed}",
                 f"{'method':<14}{'pairs':>6}{'deletion AUC':>14}{'insertion AUC':>15}{'pointing':>10}{'mIoU':>8}"]  # fmt: skip
        for name in (*self.methods, "random"):
            s = self.sums[name].summary()
            lines.append(f"{name:<14}{s['pairs']:>6}{cell(s['deletion_auc']):>14}{cell(s['insertion_auc']):>15}"
                         f"{cell(s['pointing'], True):>10}{cell(s['miou']):>8}")  # fmt: skip
        lines.append("deletion AUC: lower is better; insertion AUC, pointing, mIoU: higher is better; "
                     "random: a random patch order (pointing: a random patch)")  # fmt: skip
        return "\n".join(lines)


def _image_scores(clf, path: str, methods: Sequence[str], fractions: np.ndarray, seed: int,
                  scores: MapScores, cancel) -> None:  # fmt: skip
    prepared = clf.prepare(path)
    cover: dict[int, np.ndarray] = {}
    if (mp := mask_path(path)).is_file():
        try:
            cover = coverage(read_mask(mp), prepared.geometry)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{mp.name}: {exc}") from None
    batch = torch.from_numpy(prepared.array)[None]
    logits, (cls, q, k) = clf.forward(batch, mode="full")
    probs = torch.softmax(logits, dim=-1)[0].numpy()
    grid = prepared.geometry.patch_grid
    attention = AttentionResult(cls[0], q[0], k[0], grid, token_layout(clf.module))
    targets = [c for c in sorted(cover) if c < probs.shape[0] and cover[c].sum() > 0]
    if not targets:
        targets, cover = [int(np.argmax(probs))], {}
    run = {"cancel": cancel}
    rd, ri = perturbed_probs(clf, batch, random_order(grid[0] * grid[1], seed), grid, fractions, **run)
    results = []
    for t in targets:
        results.append(("random", t, None, rd[:, t], ri[:, t]))
    for method in methods:
        shared = None
        for t in targets:
            if method in CLASS_SPECIFIC or shared is None:
                grid_map = explain(clf, batch, method, t, attention=attention, cancel=cancel)
                shared = (grid_map, *perturbed_probs(clf, batch, map_order(grid_map), grid, fractions, **run))
            grid_map, dp, ip = shared
            results.append((method, t, grid_map, dp[:, t], ip[:, t]))
    for name, t, grid_map, dele, ins in results:  # an image counts only when every score is in
        s = scores.sums[name]
        s.deletion.append(area(fractions, dele))
        s.insertion.append(area(fractions, ins))
        if t in cover:
            if grid_map is None:
                s.hits.append(float((cover[t] > 0).mean()))
            else:
                s.hits.append(float(pointing_hit(grid_map, cover[t])))
                s.ious.append(iou(grid_map, cover[t]))
    scores.images += 1
    scores.with_masks += bool(cover)
    scores.two_objects += len(cover) >= 2


def evaluate_maps(clf, paths: Iterable[str], methods: Sequence[str], *, step: float = 0.05, seed: int = 0,
                  cancel: Callable[[], bool] | None = None,
                  on_image: Callable[[int, str, str | None], None] | None = None) -> MapScores:  # fmt: skip
    """Score ``methods`` on every image in ``paths`` (``*.mask.png`` files are masks, not
    images).  A broken image (or mask) is recorded in ``failures`` and the others go on;
    ``on_image(done, path, error)`` after each."""
    fractions = fractions_for(step)
    scores = MapScores(getattr(clf, "model_id", "model"), tuple(methods), step, seed)
    scores.sums = {m: _Sums() for m in (*methods, "random")}
    done = 0
    for path in paths:
        if is_mask_path(path):
            continue
        error = None
        try:
            _image_scores(clf, path, methods, fractions, seed, scores, cancel)
        except Cancelled:
            raise
        except (VitDesktopError, OSError, ValueError) as exc:
            error = " ".join(str(exc).split()) or type(exc).__name__
            scores.failures.append((path, error))
        done += 1
        if on_image is not None:
            on_image(done, path, error)
    return scores
