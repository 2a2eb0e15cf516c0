"""Procedurally generated shapes: the data set behind the ``demo-shapes`` model.

Each image holds one filled shape of a random colour, 30–70% of the image's shorter side,
at a random rotation and a random position fully inside the image, on a random-colour
background with noise or a gradient.  Images are 64–640 px with an aspect ratio of 0.5–2.
Everything is drawn from a ``numpy.random.Generator`` so a seed gives the same images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = (
    "circle",
    "ellipse",
    "semicircle",
    "ring",
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "star",
    "cross",
)

MIN_SIDE, MAX_SIDE = 64, 640
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0
MIN_FRACTION, MAX_FRACTION = 0.30, 0.70
SCENE_MIN_FRACTION, SCENE_MAX_FRACTION = 0.25, 0.45  # each shape of a two-shape scene
SCENE_GAP = 0.05  # free space between a scene's two bounding boxes, fraction of the shorter side
_SUPERSAMPLE = 3
_MIN_CONTRAST = 90.0  # Euclidean RGB distance between shape and background


@dataclass(frozen=True)
class ShapeSample:
    image: Image.Image  # RGB, possibly drawn at a reduced scale (see ``scale``)
    label: int
    bbox: tuple[float, float, float, float]  # left, top, right, bottom in full-size pixels
    full_size: tuple[int, int]  # (width, height) of the image the sample stands for
    scale: float  # image.width / full_size[0]
    mask: np.ndarray | None = field(default=None, compare=False)  # (h, w) bool, drawn scale

    @property
    def name(self) -> str:
        return CLASSES[self.label]

    def label_image(self) -> np.ndarray:
        """(full height, full width) uint8: class index + 1 on the shape, 0 elsewhere."""
        return label_image((self.mask,), (self.label,), self.full_size)


def _circle(n: int, rx: float, ry: float, start: float = 0.0, end: float = 2 * math.pi):
    t = np.linspace(start, end, n, endpoint=end - start < 2 * math.pi - 1e-9)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def _regular(n: int, r: float) -> np.ndarray:
    t = np.arange(n) * 2 * math.pi / n - math.pi / 2
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _outline(label: int, size: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Polygons (outer first, then holes) centred on the origin, before rotation.

    ``size`` is the shape's nominal diameter, tip to tip (a circle's diameter, an ellipse's
    major axis, a polygon's or star's circumscribed circle, a cross's arm span), so every
    class spans 30–70% of the shorter side.
    """
    r = size / 2
    name = CLASSES[label]
    if name == "circle":
        return [_circle(96, r, r)]
    if name == "ellipse":
        ratio = rng.uniform(2.0, 3.2)
        return [_circle(96, r, r / ratio)]
    if name == "semicircle":
        arc = _circle(64, r, r, math.pi, 2 * math.pi)
        pts = np.concatenate([arc, [[r, 0.0]]])
        return [pts - [0.0, -r / 2]]  # centre the half disc's bounding box
    if name == "ring":
        inner = rng.uniform(0.45, 0.65)
        return [_circle(96, r, r), _circle(96, r * inner, r * inner)]
    if name in ("triangle", "square", "pentagon", "hexagon"):
        n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[name]
        return [_regular(n, r)]
    if name == "star":
        inner = rng.uniform(0.38, 0.5)
        outer = _regular(5, r)
        inn = _regular(5, r * inner) @ np.array(
            [[math.cos(math.pi / 5), math.sin(math.pi / 5)], [-math.sin(math.pi / 5), math.cos(math.pi / 5)]]
        )
        pts = np.empty((10, 2))
        pts[0::2], pts[1::2] = outer, inn
        return [pts]
    if name == "cross":
        w = r * rng.uniform(0.28, 0.42)
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r),
               (-w, w), (-r, w), (-r, -w), (-w, -w)]  # fmt: skip
        return [np.array(pts, dtype=float)]
    raise ValueError(f"unknown class {label}")


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _far_colour(rng: np.random.Generator, *others: np.ndarray) -> np.ndarray:
    for _ in range(200):
        c = _random_colour(rng)
        if all(np.linalg.norm(c - o) >= _MIN_CONTRAST for o in others):
            return c
    # Fall back to the colour opposite the first background colour.
    return 255.0 - others[0]


def _background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[np.ndarray]]:
    c0 = _random_colour(rng)
    if rng.random() < 0.5:
        c1 = c0 + rng.uniform(-90, 90, size=3)
        c1 = np.clip(c1, 0, 255)
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx / max(w - 1, 1) - 0.5) * math.cos(ang) + (yy / max(h - 1, 1) - 0.5) * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
        return img.astype(np.float32), [c0, c1]
    img = np.empty((h, w, 3), np.float32)
    img[:] = c0
    return img, [c0]


def random_size(
    rng: np.random.Generator, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE
) -> tuple[int, int]:
    """(width, height) with sides in 64–640 (or the given range) and aspect ratio in 0.5–2
    (narrowed to what the range allows)."""
    lo, hi = max(MIN_ASPECT, min_side / max_side), min(MAX_ASPECT, max_side / min_side)
    while True:
        aspect = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        short = rng.uniform(min_side, max_side / max(aspect, 1 / aspect))
        w, h = (short * aspect, short) if aspect >= 1 else (short, short / aspect)
        w, h = int(round(w)), int(round(h))
        if min_side <= w <= max_side and min_side <= h <= max_side:
            return w, h


def _posed(label: int, extent: float, rng: np.random.Generator, outline=None) -> list[np.ndarray]:
    """The class's polygons at nominal size ``extent``, turned by a random angle.

    ``outline(label, size, rng)`` gives the polygons of another set of classes (default
    :func:`_outline`, the demo's)."""
    polys = (outline or _outline)(label, extent, rng)
    theta = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return [p @ rot.T for p in polys]


def _alpha(polys: list[np.ndarray], w: int, h: int) -> np.ndarray:
    """Anti-aliased coverage (h, w, 1) in 0–1: the outer polygon minus its holes."""
    ss = _SUPERSAMPLE
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([tuple(pt) for pt in polys[0] * ss], fill=255)
    for hole in polys[1:]:
        draw.polygon([tuple(pt) for pt in hole * ss], fill=0)
    return np.asarray(mask.resize((w, h), Image.Resampling.BOX), np.float32)[..., None] / 255.0


def _finish(img: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Noise on 70% of images, then 8-bit RGB."""
    if rng.random() < 0.7:
        sigma = rng.uniform(2, 24)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def _drawn_size(full: tuple[int, int], max_side: int | None) -> tuple[int, int, float]:
    full_w, full_h = full
    scale = 1.0
    if max_side is not None and max(full_w, full_h) > max_side:
        scale = max_side / max(full_w, full_h)
    return max(1, round(full_w * scale)), max(1, round(full_h * scale)), scale


def _box(poly: np.ndarray, scale: float) -> tuple[float, float, float, float]:
    lo, hi = poly.min(axis=0) / scale, poly.max(axis=0) / scale
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def generate(
    rng: np.random.Generator,
    label: int | None = None,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    with_mask: bool = False,
    outline=None,
) -> ShapeSample:
    """Draw one sample.

    ``max_side`` draws the image at a reduced scale whose longer side is at most that many
    pixels (the training loop uses it: the model sees a downscaled image anyway); the
    bounding box is still given in full-size pixels.  ``with_mask`` adds the shape's pixel
    mask at the drawn scale; it draws nothing more from ``rng``, so the images are the same.
    ``outline`` draws another set of classes (see :func:`_posed`); ``label`` is then its index.
    """
    if label is None:
        label = int(rng.integers(len(CLASSES)))
    full_w, full_h = size if size is not None else random_size(rng)
    w, h, scale = _drawn_size((full_w, full_h), max_side)

    short = min(full_w, full_h) * scale
    extent = rng.uniform(MIN_FRACTION, MAX_FRACTION) * short
    polys = _posed(label, extent, rng, outline)
    lo = polys[0].min(axis=0)
    hi = polys[0].max(axis=0)
    cx = rng.uniform(-lo[0], w - hi[0]) if w - hi[0] > -lo[0] else w / 2
    cy = rng.uniform(-lo[1], h - hi[1]) if h - hi[1] > -lo[1] else h / 2
    polys = [p + [cx, cy] for p in polys]

    bg, bg_colours = _background(rng, w, h)
    fg = _far_colour(rng, *bg_colours)
    alpha = _alpha(polys, w, h)
    out = _finish(bg * (1 - alpha) + fg[None, None, :] * alpha, rng)
    mask = alpha[..., 0] >= 0.5 if with_mask else None
    return ShapeSample(out, label, _box(polys[0], scale), (full_w, full_h), w / full_w, mask)


@dataclass(frozen=True)
class SceneSample:
    """Two different shapes that do not touch, on one background."""

    image: Image.Image  # RGB, possibly drawn at a reduced scale (see ``scale``)
    labels: tuple[int, int]
    bboxes: tuple[tuple[float, float, float, float], ...]  # per shape, full-size pixels
    full_size: tuple[int, int]
    scale: float  # image.width / full_size[0]
    masks: tuple[np.ndarray, ...] = field(compare=False)  # per shape, (h, w) bool, drawn scale

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(CLASSES[i] for i in self.labels)

    def label_image(self) -> np.ndarray:
        """(full height, full width) uint8: class index + 1 on each shape, 0 elsewhere."""
        return label_image(self.masks, self.labels, self.full_size)


def full_size_mask(mask: np.ndarray, full_size: tuple[int, int]) -> np.ndarray:
    """A drawn-scale boolean mask at the full (width, height), nearest neighbour."""
    w, h = full_size
    if mask.shape == (h, w):
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(img) >= 128


def label_image(masks, labels, full_size: tuple[int, int]) -> np.ndarray:
    """One uint8 image at full size: each shape's pixels hold its class index + 1."""
    w, h = full_size
    out = np.zeros((h, w), np.uint8)
    for mask, label in zip(masks, labels):
        if mask is None:
            raise ValueError("the sample was drawn without its mask (use with_mask=True)")
        out[full_size_mask(mask, full_size)] = label + 1
    return out


def scene_labels(rng: np.random.Generator) -> tuple[int, int]:
    """Two different classes, every ordered pair equally likely."""
    n = len(CLASSES)
    a = int(rng.integers(n))
    return a, (a + 1 + int(rng.integers(n - 1))) % n


def _apart(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], gap: float) -> bool:
    """Whether two (lo, hi) boxes are at least ``gap`` apart along x or y."""
    return bool(np.any(np.maximum(b[0] - a[1], a[0] - b[1]) >= gap))


def _place_apart(polys: list[list[np.ndarray]], w: int, h: int, gap: float, rng: np.random.Generator):
    """Offsets that put each shape fully inside the image with the boxes ``gap`` apart.

    Uniform positions are tried first; then opposite corners; when even those touch (two
    large shapes in a square image, rare) both shapes shrink by 10% and it starts again.
    """
    for _ in range(20):
        ext = [(p[0].min(axis=0), p[0].max(axis=0)) for p in polys]
        room = [np.array([w, h]) - hi for _, hi in ext]
        for _ in range(100):
            offs = [
                np.array([rng.uniform(-lo[i], r[i]) if r[i] > -lo[i] else (w, h)[i] / 2 for i in (0, 1)])
                for (lo, _), r in zip(ext, room)
            ]
            if _apart(*[(lo + o, hi + o) for (lo, hi), o in zip(ext, offs)], gap):
                return offs
        corner = [-ext[0][0], room[1]]
        if _apart(
            (ext[0][0] + corner[0], ext[0][1] + corner[0]),
            (ext[1][0] + corner[1], ext[1][1] + corner[1]),
            gap,
        ):
            return corner
        polys[:] = [[q * 0.9 for q in p] for p in polys]
    raise RuntimeError(f"cannot place two shapes apart in {w}x{h}")


def generate_scene(
    rng: np.random.Generator,
    labels: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
) -> SceneSample:
    """Draw two different shapes, each 25–45% of the shorter side, boxes apart.

    Same backgrounds, colours and noise as :func:`generate`; each shape has its own colour
    far from the background.  The masks are at the drawn scale (see ``max_side``).
    """
    if labels is None:
        labels = scene_labels(rng)
    labels = (int(labels[0]), int(labels[1]))
    if labels[0] == labels[1] or not all(0 <= i < len(CLASSES) for i in labels):
        raise ValueError(f"a scene needs two different classes, got {labels}")
    full_w, full_h = size if size is not None else random_size(rng)
    w, h, scale = _drawn_size((full_w, full_h), max_side)
    short = min(full_w, full_h) * scale
    polys = [_posed(lab, rng.uniform(SCENE_MIN_FRACTION, SCENE_MAX_FRACTION) * short, rng) for lab in labels]
    offsets = _place_apart(polys, w, h, max(2.0, SCENE_GAP * short), rng)
    polys = [[q + o for q in p] for p, o in zip(polys, offsets)]

    img, bg_colours = _background(rng, w, h)
    masks, used = [], list(bg_colours)
    for p in polys:
        fg = _far_colour(rng, *used)
        used.append(fg)
        alpha = _alpha(p, w, h)
        img = img * (1 - alpha) + fg[None, None, :] * alpha
        masks.append(alpha[..., 0] >= 0.5)
    out = _finish(img.astype(np.float32), rng)
    bboxes = tuple(_box(p[0], scale) for p in polys)
    return SceneSample(out, labels, bboxes, (full_w, full_h), w / full_w, tuple(masks))
