"""numpy → QImage, and overlays drawn from cached results: on the GUI thread when a control
moves, and in the worker for a new result (:func:`drawing`; QImages, unlike QPixmaps, may be
made off the GUI thread).

QImages built from numpy memory keep a reference to the array (``QImage`` does not own
the buffer), so every helper here returns an image that owns its pixels (``.copy()``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PySide6.QtGui import QImage

from ..core import maps
from ..core.overlay import colorize, map_to_image
from ..core.preprocess import Geometry
from .methods import is_class_specific
from .outcome import Drawing, explain

OVERLAY_MAX_SIDE = 768  # the overlay raster; the painter scales it smoothly


def rgb_to_qimage(arr: np.ndarray) -> QImage:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = arr.shape[:2]
    img = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return img.copy()  # own the pixels: the numpy buffer may go away


def rgba_to_qimage(arr: np.ndarray) -> QImage:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = arr.shape[:2]
    img = QImage(arr.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return img.copy()


def overlay_rgba(grid_map: np.ndarray, geom: Geometry, size: tuple[int, int], cmap: str,
                 opacity: float) -> np.ndarray:  # fmt: skip
    """An RGBA raster of ``size`` (w, h) covering the whole original image: the colour-
    mapped attention where the model looked, transparent elsewhere."""
    m = map_to_image(maps.normalise(grid_map), geom, size)
    seen = ~np.isnan(m)
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    rgba[..., :3] = colorize(np.nan_to_num(m), cmap)
    rgba[..., 3] = np.where(seen, int(round(255 * max(0.0, min(1.0, opacity)))), 0)
    return rgba


def overlay_size(geom: Geometry) -> tuple[int, int]:
    """The (w, h) of the overlay raster: the original's proportions, at most OVERLAY_MAX_SIDE."""
    ow, oh = geom.original_size
    scale = min(1.0, OVERLAY_MAX_SIDE / max(ow, oh))
    return max(1, round(ow * scale)), max(1, round(oh * scale))


def overlay_image(grid_map: np.ndarray, geom: Geometry, cmap: str, opacity: float) -> QImage:
    """The overlay raster the view draws over the picture."""
    return rgba_to_qimage(overlay_rgba(grid_map, geom, overlay_size(geom), cmap, opacity))


def heads_layer(att, layer: int) -> int:
    """The layer the per-head maps show for the slider at ``layer``."""
    return layer if layer < att.num_layers else att.num_layers - 1


def drawing(result, wanted) -> Drawing | None:
    """A new result's map, overlay raster and per-head maps for the panel's settings
    ``wanted()`` (a :class:`.panels.ViewSettings`; its layer -1: the last), drawn on the
    worker thread with the same functions the GUI thread uses.  None when there is nothing
    to draw or no settings were given; a failure is logged (the window then draws itself)."""
    att = getattr(result, "attention", None)
    if wanted is None or att is None:
        return None
    try:
        s = wanted()
        if s is None:
            return None
        last = att.num_layers - 1
        s = dataclasses.replace(s, layer=last if s.layer < 0 or s.layer > last else s.layer)
        map_key = grid = overlay = None
        if not is_class_specific(s.kind):
            map_key = (s.map_spec(), s.query)
            grid = maps.compute(att, *map_key)
            overlay = overlay_image(grid, result.geometry, s.cmap, s.opacity)
        layer = heads_layer(att, s.layer)
        heads = tuple(heads_grid(att, layer, s.cmap, query=s.query))
        return Drawing(map_key, grid, (s.cmap, s.opacity), overlay, (layer, s.cmap, s.query), heads,
                       register_share(att, layer, s.query))  # fmt: skip
    except Exception as exc:
        explain("drawing the overlay in the worker failed", exc)
        return None


def heads_grid(att, layer: int, cmap: str, cell: int = 48, query: int | None = None) -> list[QImage]:
    """One small image per head of ``layer`` (the query's attention: CLS, the mean of the
    patches, or the prefix token ``query``), nearest-neighbour enlarged."""
    out = []
    rows_all = maps.head_rows(att, layer, query)
    for h in range(att.num_heads):
        m = maps.normalise(maps.row_to_grid(rows_all[h], att))
        rows, cols = m.shape
        reps = max(1, cell // max(rows, cols))
        big = np.kron(m, np.ones((reps, reps), np.float32))
        out.append(rgb_to_qimage(colorize(big, cmap)))
    return out


def register_share(att, layer: int, query: int | None = None) -> str:
    """ "Attention to registers, layer L: h1 12% · h2 3% …": the share of the query's attention
    that goes to the register tokens, per head ("" for a model without registers)."""
    regs = list(att.layout.registers)
    if not regs:
        return ""
    share = maps.head_rows(att, layer, query)[:, regs].sum(axis=-1)
    per_head = " · ".join(f"h{h + 1} {v:.0%}" for h, v in enumerate(share))
    return f"Attention to the {len(regs)} register tokens, layer {layer % att.num_layers + 1}: {per_head}"
