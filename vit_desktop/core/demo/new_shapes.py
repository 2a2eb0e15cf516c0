"""Shapes the ``demo-shapes`` model never saw, as folders of images to teach it new classes.

Each image is drawn exactly like the demo data (:mod:`.shapes`: the same backgrounds, colours,
noise, sizes, positions and rotation); only the outlines are new.  A class folder layout
(``root/<class>/<class>_<i>.png``) is what a classifier head is trained on, and
:func:`write_split` adds a held-out test set drawn from other seeds.

    python -m vit_desktop.core.demo.new_shapes OUT --per-class 30 --classes heart,arrow --seed 0
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from . import shapes
from .shapes import _circle, random_size

NEW_CLASSES: tuple[str, ...] = ("heart", "arrow", "crescent", "l-shape", "trapezoid", "diamond")
DEFAULT_CLASSES: tuple[str, ...] = NEW_CLASSES[:4]
DEFAULT_MIN_SIDE, DEFAULT_MAX_SIDE = shapes.MIN_SIDE, 256
_TRAIN_STREAM, _TEST_STREAM = 1, 2  # write_class_folders draws from stream 0


def _centred(pts) -> np.ndarray:
    pts = np.asarray(pts, dtype=float)
    return pts - (pts.min(axis=0) + pts.max(axis=0)) / 2


def _heart(size: float, rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 120, endpoint=False)
    x = 16 * np.sin(t) ** 3 * rng.uniform(0.9, 1.1)
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # y grows downwards
    pts = _centred(np.stack([x, y], axis=1))
    return pts * size / np.ptp(pts, axis=0).max()


def _crescent(r: float, rng: np.random.Generator) -> np.ndarray:
    """A disc of radius ``r`` minus a disc of radius ``r2`` whose centre is ``d`` to the right."""
    r2, d = r * rng.uniform(0.75, 0.88), r * rng.uniform(0.35, 0.5)
    xi = (r * r - r2 * r2 + d * d) / (2 * d)  # where the two circles cross
    yi = math.sqrt(r * r - xi * xi)
    phi, psi = math.atan2(yi, xi), math.atan2(yi, xi - d)
    outer = _circle(64, r, r, phi, 2 * math.pi - phi)  # the big circle's left side, top to bottom
    inner = _circle(48, r2, r2, 2 * math.pi - psi, psi) + [d, 0.0]  # back up the small one
    return _centred(np.concatenate([outer, inner[1:-1]]))


def _outline(label: int, size: float, rng: np.random.Generator) -> list[np.ndarray]:
    """The new class's polygon centred on the origin, before rotation; ``size`` is its span
    tip to tip, as in :func:`.shapes._outline`."""
    if not 0 <= label < len(NEW_CLASSES):
        raise ValueError(f"unknown new class {label}; there are {len(NEW_CLASSES)}")
    name, r = NEW_CLASSES[label], size / 2
    if name == "heart":
        return [_heart(size, rng)]
    if name == "arrow":
        w, hw, hl = r * rng.uniform(0.14, 0.22), r * rng.uniform(0.45, 0.6), r * rng.uniform(0.6, 0.8)
        pts = [(-r, -w), (r - hl, -w), (r - hl, -hw), (r, 0), (r - hl, hw), (r - hl, w), (-r, w)]
        return [_centred(pts)]
    if name == "crescent":
        return [_crescent(r, rng)]
    if name == "l-shape":
        a = size / math.sqrt(2)  # the bounding square's diagonal spans ``size``
        b, t = a * rng.uniform(0.7, 1.0), a * rng.uniform(0.3, 0.42)
        return [_centred([(0, 0), (t, 0), (t, a - t), (b, a - t), (b, a), (0, a)])]
    if name == "trapezoid":
        base, top, height = size * 0.9, size * rng.uniform(0.35, 0.55), size * rng.uniform(0.4, 0.55)
        return [_centred([(-base / 2, height), (base / 2, height), (top / 2, 0), (-top / 2, 0)])]
    ratio = rng.uniform(0.45, 0.65)  # diamond: a rhombus, never a square
    return [np.array([(0, -r), (r * ratio, 0), (0, r), (-r * ratio, 0)], dtype=float)]


def new_sample(label: int, rng: np.random.Generator, max_side: int | None = None,
               size: tuple[int, int] | None = None) -> tuple[Image.Image, np.ndarray]:  # fmt: skip
    """One image of new class ``label`` (an index into ``NEW_CLASSES``) and its (h, w) bool
    shape mask; ``max_side`` and ``size`` as in :func:`.shapes.generate`."""
    if not 0 <= int(label) < len(NEW_CLASSES):
        raise ValueError(f"unknown new class {label}; there are {len(NEW_CLASSES)}")
    s = shapes.generate(rng, int(label), size, max_side, with_mask=True, outline=_outline)
    return s.image, s.mask


def generate_new(label: int, rng: np.random.Generator, max_side: int | None = None) -> Image.Image:
    """One RGB image of new class ``label``, drawn like the demo data."""
    return new_sample(label, rng, max_side)[0]


def _class_indices(classes) -> list[int]:
    if isinstance(classes, str):
        classes = [c for c in classes.split(",") if c.strip()]
    names = [c.strip() for c in classes]
    unknown = [c for c in names if c not in NEW_CLASSES]
    if unknown or not names or len(set(names)) != len(names):
        what = f"unknown class {unknown[0]!r}" if unknown else "classes must be distinct and not empty"
        raise ValueError(f"{what}; choose from {', '.join(NEW_CLASSES)}")
    return [NEW_CLASSES.index(c) for c in names]


def _write(root, classes, per_class: int, seed: int, stream: int, min_side: int,
           max_side: int) -> dict[str, list[Path]]:  # fmt: skip
    indices = _class_indices(classes)
    if per_class < 1 or isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"per_class must be ≥ 1 and seed a whole number ≥ 0 (got {per_class}, {seed})")
    if not 1 <= min_side <= max_side:
        raise ValueError(f"need 1 ≤ min_side ≤ max_side (got {min_side}, {max_side})")
    out: dict[str, list[Path]] = {}
    for label in indices:
        name = NEW_CLASSES[label]
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        # One stream per (seed, split, class): adding a class leaves the others' images alone.
        rng = np.random.default_rng([int(seed), stream, label])
        out[name] = []
        for i in range(per_class):
            image, _ = new_sample(label, rng, size=random_size(rng, min_side, max_side))
            path = folder / f"{name}_{i}.png"
            image.save(path, format="PNG")
            out[name].append(path)
    return out


def write_class_folders(root: str | os.PathLike[str], classes=DEFAULT_CLASSES, per_class: int = 30,
                        seed: int = 0, min_side: int = DEFAULT_MIN_SIDE,
                        max_side: int = DEFAULT_MAX_SIDE) -> dict[str, list[Path]]:  # fmt: skip
    """Write ``root/<class>/<class>_<i>.png`` for each class (names from ``NEW_CLASSES``, or
    one comma-separated string); image sides are in ``min_side``–``max_side``.  The same
    seed writes the same files.  Returns class name → the paths written, in order."""
    return _write(root, classes, per_class, seed, 0, min_side, max_side)


def write_split(root: str | os.PathLike[str], classes=DEFAULT_CLASSES, train_per_class: int = 30,
                test_per_class: int = 20, seed: int = 0, min_side: int = DEFAULT_MIN_SIDE,
                max_side: int = DEFAULT_MAX_SIDE) -> dict[str, dict[str, list[Path]]]:  # fmt: skip
    """Write ``root/train/<class>/…`` and ``root/test/<class>/…`` from disjoint random streams
    (held-out images never repeat a training one).  Returns {"train": …, "test": …}."""
    root = Path(root)
    return {
        "train": _write(root / "train", classes, train_per_class, seed, _TRAIN_STREAM, min_side, max_side),
        "test": _write(root / "test", classes, test_per_class, seed, _TEST_STREAM, min_side, max_side),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vit_desktop.core.demo.new_shapes",
        description="Write folders of shapes the demo model never saw, one sub-folder per class.",
    )
    p.add_argument("out", help="folder to write into (created if missing)")
    p.add_argument("--per-class", type=int, default=30, help="images per class (default 30)")
    p.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                   help=f"comma-separated, from {','.join(NEW_CLASSES)} (default: the first four)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--test-per-class", type=int, default=0,
                   help="also write a held-out set: OUT/train/… and OUT/test/… (default: none)")  # fmt: skip
    p.add_argument("--min-side", type=int, default=DEFAULT_MIN_SIDE, help="shortest image side (px)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="longest image side (px)")
    args = p.parse_args(argv)
    sizes = {"seed": args.seed, "min_side": args.min_side, "max_side": args.max_side}
    try:
        if args.test_per_class > 0:
            written = write_split(args.out, args.classes, args.per_class, args.test_per_class, **sizes)
            count = sum(len(v) for split in written.values() for v in split.values())
        else:
            written = write_class_folders(args.out, args.classes, args.per_class, **sizes)
            count = sum(len(v) for v in written.values())
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{count} images in {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
