"""numpy → QImage on the GUI thread, and overlays drawn from cached results.

QImages built from numpy memory keep a reference to the array (``QImage`` does not own
the buffer), so every helper here returns an image that owns its pixels (``.copy()``).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage

from ..core import maps
from ..core.overlay import colorize, map_to_image
from ..core.preprocess import Geometry


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
