"""Heat maps over original pixels, drawn with numpy and Pillow (no Qt).

The app and the command line both place a patch-grid map onto the original image through
the preprocessing :class:`~vit_desktop.core.preprocess.Geometry`, so a map lands on the
right pixels whatever the crop, padding or aspect ratio.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .preprocess import Geometry

# Control points of the colour maps (sampled from matplotlib's definitions), 0 → 1.
_CMAPS: dict[str, list[tuple[float, float, float]]] = {
    "viridis": [(0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530),
                (0.207, 0.372, 0.553), (0.164, 0.471, 0.558), (0.128, 0.567, 0.551),
                (0.135, 0.659, 0.518), (0.267, 0.749, 0.441), (0.478, 0.821, 0.318),
                (0.741, 0.873, 0.150), (0.993, 0.906, 0.144)],
    "inferno": [(0.001, 0.000, 0.014), (0.087, 0.045, 0.225), (0.258, 0.039, 0.406),
                (0.416, 0.090, 0.433), (0.578, 0.148, 0.404), (0.735, 0.216, 0.330),
                (0.865, 0.317, 0.226), (0.954, 0.469, 0.099), (0.988, 0.645, 0.040),
                (0.964, 0.843, 0.273), (0.988, 0.998, 0.645)],
    "jet": [(0.0, 0.0, 0.5), (0.0, 0.0, 1.0), (0.0, 0.5, 1.0), (0.0, 1.0, 1.0),
            (0.5, 1.0, 0.5), (1.0, 1.0, 0.0), (1.0, 0.5, 0.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0)],
    "gray": [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)],
}  # fmt: skip
COLORMAPS = tuple(_CMAPS)
_LUTS: dict[str, np.ndarray] = {}


def lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table for ``name``."""
    if name not in _CMAPS:
        raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}")
    if name not in _LUTS:
        pts = np.asarray(_CMAPS[name], np.float64)
        xs = np.linspace(0, 1, len(pts))
        t = np.linspace(0, 1, 256)
        table = np.stack([np.interp(t, xs, pts[:, c]) for c in range(3)], axis=1)
        _LUTS[name] = np.round(table * 255).astype(np.uint8)
    return _LUTS[name]


def colorize(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Values in [0, 1] → (…, 3) uint8 colours."""
    idx = np.clip(np.round(values * 255), 0, 255).astype(np.uint8)
    return lut(cmap)[idx]


def map_to_image(grid_map: np.ndarray, geom: Geometry, size: tuple[int, int] | None = None,
                 smooth: bool = True) -> np.ndarray:  # fmt: skip
    """Resample a (rows, cols) map to (height, width) original pixels through ``geom``.

    ``size`` is the (width, height) of the target raster (defaults to the original size;
    a smaller raster for a display stays in proportion).  Pixels outside the crop box get
    NaN (the model did not see them)."""
    ow, oh = geom.original_size
    w, h = size or (ow, oh)
    rows, cols = grid_map.shape
    # Original-pixel centres of the target raster → model-input coordinates → patch units.
    xs = (np.arange(w) + 0.5) * (ow / w)
    ys = (np.arange(h) + 0.5) * (oh / h)
    ix = (xs * geom.scale[0] - geom.offset[0]) / geom.patch_size
    iy = (ys * geom.scale[1] - geom.offset[1]) / geom.patch_size
    inside_x = (ix >= 0) & (ix < cols)
    inside_y = (iy >= 0) & (iy < rows)
    g = grid_map.astype(np.float32)
    if smooth:
        fx = np.clip(ix - 0.5, 0, cols - 1)
        fy = np.clip(iy - 0.5, 0, rows - 1)
        x0 = np.floor(fx).astype(int)
        y0 = np.floor(fy).astype(int)
        x1 = np.minimum(x0 + 1, cols - 1)
        y1 = np.minimum(y0 + 1, rows - 1)
        wx = (fx - x0)[None, :]
        wy = (fy - y0)[:, None]
        top = g[y0][:, x0] * (1 - wx) + g[y0][:, x1] * wx
        bot = g[y1][:, x0] * (1 - wx) + g[y1][:, x1] * wx
        out = top * (1 - wy) + bot * wy
    else:
        cx = np.clip(np.floor(ix).astype(int), 0, cols - 1)
        cy = np.clip(np.floor(iy).astype(int), 0, rows - 1)
        out = g[cy][:, cx]
    out = out.astype(np.float32)
    out[~inside_y, :] = np.nan
    out[:, ~inside_x] = np.nan
    return out


def blend(image: Image.Image, grid_map: np.ndarray, geom: Geometry, cmap: str = "inferno",
          opacity: float = 0.55, dim_unseen: float = 0.5) -> Image.Image:  # fmt: skip
    """The heat map over ``image`` at the image's own resolution (for saving)."""
    from .maps import normalise

    base = np.asarray(image.convert("RGB"), np.float32)
    h, w = base.shape[:2]
    m = map_to_image(normalise(grid_map), geom, (w, h))
    seen = ~np.isnan(m)
    colours = colorize(np.nan_to_num(m), cmap).astype(np.float32)
    out = base.copy()
    a = float(np.clip(opacity, 0, 1))
    out[seen] = base[seen] * (1 - a) + colours[seen] * a
    out[~seen] = base[~seen] * (1 - dim_unseen)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
