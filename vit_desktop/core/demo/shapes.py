"""Procedurally generated shapes: the data set behind the ``demo-shapes`` model.

Each image holds one filled shape of a random colour, 30–70% of the image's shorter side,
at a random rotation and a random position fully inside the image, on a random-colour
background with noise or a gradient.  Images are 64–640 px with an aspect ratio of 0.5–2.
Everything is drawn from a ``numpy.random.Generator`` so a seed gives the same images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
_SUPERSAMPLE = 3
_MIN_CONTRAST = 90.0  # Euclidean RGB distance between shape and background


@dataclass(frozen=True)
class ShapeSample:
    image: Image.Image  # RGB, possibly drawn at a reduced scale (see ``scale``)
    label: int
    bbox: tuple[float, float, float, float]  # left, top, right, bottom in full-size pixels
    full_size: tuple[int, int]  # (width, height) of the image the sample stands for
    scale: float  # image.width / full_size[0]

    @property
    def name(self) -> str:
        return CLASSES[self.label]


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


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) with sides in 64–640 and aspect ratio in 0.5–2."""
    while True:
        aspect = math.exp(rng.uniform(math.log(MIN_ASPECT), math.log(MAX_ASPECT)))
        short = rng.uniform(MIN_SIDE, MAX_SIDE / max(aspect, 1 / aspect))
        w, h = (short * aspect, short) if aspect >= 1 else (short, short / aspect)
        w, h = int(round(w)), int(round(h))
        if MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE:
            return w, h


def generate(
    rng: np.random.Generator,
    label: int | None = None,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
) -> ShapeSample:
    """Draw one sample.

    ``max_side`` draws the image at a reduced scale whose longer side is at most that many
    pixels (the training loop uses it: the model sees a downscaled image anyway); the
    bounding box is still given in full-size pixels.
    """
    if label is None:
        label = int(rng.integers(len(CLASSES)))
    full_w, full_h = size if size is not None else random_size(rng)
    scale = 1.0
    if max_side is not None and max(full_w, full_h) > max_side:
        scale = max_side / max(full_w, full_h)
    w, h = max(1, round(full_w * scale)), max(1, round(full_h * scale))

    short = min(full_w, full_h) * scale
    extent = rng.uniform(MIN_FRACTION, MAX_FRACTION) * short
    polys = _outline(label, extent, rng)
    theta = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    polys = [p @ rot.T for p in polys]
    lo = polys[0].min(axis=0)
    hi = polys[0].max(axis=0)
    cx = rng.uniform(-lo[0], w - hi[0]) if w - hi[0] > -lo[0] else w / 2
    cy = rng.uniform(-lo[1], h - hi[1]) if h - hi[1] > -lo[1] else h / 2
    polys = [p + [cx, cy] for p in polys]

    bg, bg_colours = _background(rng, w, h)
    fg = _far_colour(rng, *bg_colours)

    ss = _SUPERSAMPLE
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([tuple(pt) for pt in polys[0] * ss], fill=255)
    for hole in polys[1:]:
        draw.polygon([tuple(pt) for pt in hole * ss], fill=0)
    alpha = np.asarray(mask.resize((w, h), Image.Resampling.BOX), np.float32)[..., None] / 255.0

    img = bg * (1 - alpha) + fg[None, None, :] * alpha
    if rng.random() < 0.7:
        sigma = rng.uniform(2, 24)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    out = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")

    lo = polys[0].min(axis=0) / scale
    hi = polys[0].max(axis=0) / scale
    bbox = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    return ShapeSample(out, label, bbox, (full_w, full_h), w / full_w)
