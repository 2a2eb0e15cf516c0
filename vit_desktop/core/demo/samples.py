"""Sample images for a first look and for scoring maps: drawn here, nothing downloaded.

:func:`write_samples` draws single shapes and two-shape scenes (:mod:`.shapes`) into a
folder, deterministically for a seed, and writes beside each image ``NAME.png`` its mask
``NAME.mask.png`` and, for the folder, ``samples.json`` (labels, boxes, sizes).

Mask convention: ``NAME.mask.png`` is an 8-bit greyscale ("L") PNG of the image's size in
which a pixel holds the class index + 1 of the shape drawn there (the index into
:data:`.shapes.CLASSES`, the demo model's label order) and 0 is background.  A single
shape's mask is therefore its union mask (``mask > 0``); in a two-shape scene
``mask == k + 1`` is the shape of class ``k``.  A pixel counts as a shape's when the
anti-aliased shape covers at least half of it.  :func:`read_mask` and :func:`class_masks`
read it back.

:func:`sample_images` is the window's "Try sample images": a dozen images, half of them
two-shape scenes, written once to the user's cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .shapes import CLASSES, MIN_SIDE, generate, generate_scene, random_size

SAMPLE_SEED = 2026
SAMPLE_COUNT = 12
SAMPLE_SCENE_FRACTION = 0.5
SAMPLE_MIN_SIDE = 224  # the window's set: no thumbnail-sized images
MANIFEST = "samples.json"
MASK_SUFFIX = ".mask.png"
FORMAT_VERSION = 1
MASK_CONVENTION = "uint8 label image: class index + 1 where that class's shape is, 0 background"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SampleFile:
    image: Path
    mask: Path
    labels: tuple[str, ...]  # one or two class names
    bboxes: tuple[Box, ...]  # left, top, right, bottom in the image's pixels, per shape
    size: tuple[int, int]  # (width, height)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(CLASSES.index(n) for n in self.labels)


def mask_path(image: str | os.PathLike) -> Path:
    """``NAME.mask.png`` beside ``NAME.EXT``."""
    p = Path(image)
    return p.with_name(p.stem + MASK_SUFFIX)


def is_mask_path(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(MASK_SUFFIX)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file as its (height, width) uint8 label image."""
    with Image.open(path) as img:
        if img.mode != "L":
            raise ValueError(f"{path}: a mask must be an 8-bit greyscale PNG, not mode {img.mode}")
        return np.array(img)


def class_masks(labels: np.ndarray) -> dict[int, np.ndarray]:
    """{class index: boolean mask} for every class present in a label image."""
    return {int(v) - 1: labels == v for v in np.unique(labels) if v}


def scene_positions(n: int, fraction: float) -> set[int]:
    """Which of ``n`` images are scenes: round(n × fraction) of them, spread evenly."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"two_shape_fraction must be in 0–1, got {fraction}")
    k = int(round(n * fraction))
    return {int((j + 0.5) * n / k) for j in range(k)} if k else set()


def _file_name(i: int, names: tuple[str, ...]) -> str:
    return f"{i + 1:02d}-{'-and-'.join(names)}.png"


def _size(rng: np.random.Generator, min_side: int) -> tuple[int, int]:
    while True:
        w, h = random_size(rng)
        if min(w, h) >= min_side:
            return w, h


def _orders(rng: np.random.Generator, length: int) -> list[int]:
    """Seeded permutations of the classes, one after another: every class once per cycle."""
    cycles = -(-length // len(CLASSES))
    return [int(c) for _ in range(cycles) for c in rng.permutation(len(CLASSES))]


def draw_samples(n: int, seed: int, two_shape_fraction: float, min_side: int = MIN_SIDE):
    """Yield (name, image, label image, labels, bboxes) for each of ``n`` samples.

    Sizes follow the training distribution (64–640 px, aspect 0.5–2) with the shorter side
    at least ``min_side``.  Single shapes cycle through the classes in a seeded order and
    scenes pair them up likewise, so a dozen samples show every class.  Image ``i`` has its
    own stream ([seed, i]).
    """
    if not MIN_SIDE <= min_side <= 320:
        raise ValueError(f"min_side must be in {MIN_SIDE}–320, got {min_side}")
    scenes = scene_positions(n, two_shape_fraction)
    order = np.random.default_rng([seed, 1 << 20])
    singles = _orders(order, n - len(scenes))
    pairs = _orders(order, 2 * len(scenes))
    k_single = k_scene = 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        size = _size(rng, min_side)
        if i in scenes:
            s = generate_scene(rng, labels=(pairs[2 * k_scene], pairs[2 * k_scene + 1]), size=size)
            k_scene += 1
            labels, bboxes = s.labels, s.bboxes
        else:
            s = generate(rng, label=singles[k_single], size=size, with_mask=True)
            k_single += 1
            labels, bboxes = (s.label,), (s.bbox,)
        names = tuple(CLASSES[j] for j in labels)
        yield _file_name(i, names), s.image, s.label_image(), names, bboxes


def write_samples(
    folder: str | os.PathLike,
    n: int = SAMPLE_COUNT,
    seed: int = SAMPLE_SEED,
    two_shape_fraction: float = SAMPLE_SCENE_FRACTION,
    min_side: int = MIN_SIDE,
) -> list[SampleFile]:
    """Draw ``n`` samples into ``folder`` (created): images, masks and ``samples.json``.

    Deterministic for (n, seed, two_shape_fraction, min_side): the same pixels every time.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out, entries = [], []
    for name, image, labels_img, names, bboxes in draw_samples(n, seed, two_shape_fraction, min_side):
        path = folder / name
        image.save(path)
        Image.fromarray(labels_img, "L").save(mask_path(path))
        boxes = tuple(tuple(round(v, 2) for v in b) for b in bboxes)
        out.append(SampleFile(path, mask_path(path), names, boxes, image.size))
        entries.append({"image": name, "mask": mask_path(name).name, "labels": list(names),
                        "indices": [CLASSES.index(c) for c in names],
                        "bboxes": [list(b) for b in boxes], "size": list(image.size)})  # fmt: skip
    manifest = {
        "version": FORMAT_VERSION,
        "seed": seed,
        "count": n,
        "two_shape_fraction": two_shape_fraction,
        "min_side": min_side,
        "classes": list(CLASSES),
        "mask": MASK_CONVENTION,
        "images": entries,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return out


def read_samples(folder: str | os.PathLike) -> list[SampleFile]:
    """The samples listed in ``folder``'s ``samples.json``."""
    folder = Path(folder)
    data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return [
        SampleFile(
            folder / e["image"],
            folder / e["mask"],
            tuple(e["labels"]),
            tuple(tuple(b) for b in e["bboxes"]),
            tuple(e["size"]),
        )  # fmt: skip
        for e in data["images"]
    ]


def cache_folder() -> Path:
    """The app's cache folder (not created): LOCALAPPDATA, ~/Library/Caches or XDG."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "ViT Desktop" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "ViT Desktop"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vit-desktop"


def _complete(folder: Path, recipe: tuple) -> list[SampleFile] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        keys = ("version", "seed", "count", "two_shape_fraction", "min_side")
        if tuple(data[k] for k in keys) != recipe:
            return None
        samples = read_samples(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return samples if all(s.image.is_file() and s.mask.is_file() for s in samples) else None


def sample_images(
    folder: str | os.PathLike | None = None,
    n: int = SAMPLE_COUNT,
    seed: int = SAMPLE_SEED,
    two_shape_fraction: float = SAMPLE_SCENE_FRACTION,
    min_side: int = SAMPLE_MIN_SIDE,
) -> list[SampleFile]:
    """The sample set, drawn once into ``folder`` (default: the cache folder) and reused.

    A set is written to a fresh folder beside the target and renamed into place, so a
    half-written set is never read; a stale or damaged one is drawn again.  A folder that
    holds anything but a sample set is never touched (FileExistsError).
    """
    target = Path(folder) if folder is not None else cache_folder() / f"samples-v{FORMAT_VERSION}-{seed}"
    recipe = (FORMAT_VERSION, seed, n, two_shape_fraction, min_side)
    found = _complete(target, recipe)
    if found is not None:
        return found
    if target.exists() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise FileExistsError(f"{target} holds other files: not replaced by sample images")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".samples-", dir=target.parent))
    try:
        write_samples(tmp, n, seed, two_shape_fraction, min_side)
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process put a set there first: use it if it is whole.
            found = _complete(target, recipe)
            if found is None:
                raise
            return found
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return read_samples(target)
