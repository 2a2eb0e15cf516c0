"""Drawing the overlay of the image on screen from its cached result: the map the
Attention panel asks for (or the hovered patch's row), the per-head maps, and the overlay
raster through the preprocessing geometry.  Never runs the model: a class-specific map
comes from :attr:`OverlayPresenter.class_maps` (the window's cache, which asks the worker
for a map it does not have; meanwhile the overlay on screen stays)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QPixmap

from ..core import maps
from . import render
from .image_view import ImageView
from .methods import is_class_specific
from .panels import AttentionPanel
from .session import Item
from .settings import Settings

OVERLAY_MAX_SIDE = 768  # the overlay raster; the painter scales it smoothly


class OverlayPresenter(QObject):
    drawn = Signal()
    shown = Signal()  # another item (or its new result) was put on screen

    def __init__(self, view: ImageView, panel: AttentionPanel, settings: Settings, parent=None) -> None:
        super().__init__(parent)
        self.view, self.panel, self.settings = view, panel, settings
        self.item: Item | None = None
        self.hover_token: int | None = None
        # The last map, overlay and heads drawn, so a control that changes none of them (the
        # layer slider on a rollout map) costs no recomputation on the GUI thread.
        self._map_memo: tuple | None = None
        self._overlay_key: tuple | None = None
        self._heads_key: tuple | None = None
        #: Where class-specific maps come from: ``map_for(item, view_settings)`` gives the
        #: cached map or None (then asks for it); ``waiting(item, view_settings)`` tells
        #: whether it is on its way.  Set by :class:`.explain_view.ExplainController`.
        self.class_maps = None
        view.hoveredPatch.connect(self._on_hover)
        view.hoverLeft.connect(self._on_hover_left)
        panel.changed.connect(self.redraw)

    def show(self, item: Item | None, placeholder: str) -> None:
        """Put ``item`` on screen (its picture, geometry, overlay); ``placeholder`` is said
        while it has no picture yet."""
        self.item = item
        self.hover_token = None
        if item is None or item.display is None:
            self.view.set_image(None)
            self._overlay_key = None
            self.view.placeholder = placeholder
            self.view.update()
            self.shown.emit()
            return
        res = item.result
        if self.view._image is not item.display:
            self.view.set_image(item.display, res.geometry.original_size if res else None)
            self._overlay_key = None  # a new picture has no overlay yet
        self.view.set_geometry(res.geometry if res else None)
        if res is not None and res.attention is not None:
            self.panel.configure(res.attention.num_layers, res.attention.num_heads)
            self.panel.configure_tokens(res.attention.layout)
            self.panel.set_approximate(res.attention.approximate)
        self.redraw()
        self.shown.emit()

    def current_map(self) -> np.ndarray | None:
        item = self.item
        if item is None or item.result is None or item.result.attention is None or not item.detailed:
            return None
        s = self.panel.settings()
        if is_class_specific(s.kind):
            return self.class_maps.map_for(item, s) if self.class_maps is not None else None
        token = self.hover_token if self.hover_token is not None else s.query
        att, spec = item.result.attention, s.map_spec()
        memo = self._map_memo
        if memo is not None and memo[0] is att and memo[1] == (spec, token):
            return memo[2]  # a control this map does not use moved (the layer slider on rollout)
        grid = maps.compute(att, spec, token)
        self._map_memo = (att, (spec, token), grid)
        return grid

    def plain_map(self) -> np.ndarray | None:
        """The map on screen without the hover: what the faithfulness score is asked for."""
        hover, self.hover_token = self.hover_token, None
        try:
            return self.current_map()
        finally:
            self.hover_token = hover

    def redraw(self, full: bool = True) -> None:
        """The overlay from the cached result; ``full`` (a control changed, not the hover)
        also saves the settings and redraws the per-head maps."""
        s = self.panel.settings()
        if full:
            self.settings.set_overlay(kind=s.kind, fusion=s.fusion, discard=s.discard, opacity=s.opacity,
                                      cmap=s.cmap)  # fmt: skip
        item, grid = self.item, self.current_map()
        if item is None or item.display is None or item.result is None:
            self.view.set_overlay(None)
            self._overlay_key = None
            return
        if grid is not None:
            geom = item.result.geometry
            key = (grid, geom, s.cmap, s.opacity)
            if self._overlay_key is None or not _same_overlay(self._overlay_key, key):
                ow, oh = geom.original_size
                scale = min(1.0, OVERLAY_MAX_SIDE / max(ow, oh))
                size = (max(1, round(ow * scale)), max(1, round(oh * scale)))
                self.view.set_overlay(
                    render.rgba_to_qimage(render.overlay_rgba(grid, geom, size, s.cmap, s.opacity))
                )
                self._overlay_key = key
        elif self.class_maps is None or not self.class_maps.waiting(item, s):
            self.view.set_overlay(None)  # (a class-specific map on its way: the overlay on screen stays)
            self._overlay_key = None
        if full and item.detailed and item.result.attention is not None:
            att = item.result.attention
            layer = s.layer if s.layer < att.num_layers else att.num_layers - 1
            heads = (att, layer, s.cmap, s.query)
            if self._heads_key is None or not _same_overlay(self._heads_key, heads):
                images = render.heads_grid(att, layer, s.cmap, query=s.query)
                self.panel.set_head_images([QPixmap.fromImage(i) for i in images])
                self.panel.set_prefix_note(render.register_share(att, layer, s.query))
                self._heads_key = heads
        if grid is not None:
            self.drawn.emit()

    def _on_hover(self, row: int, col: int) -> None:
        if self.item is None or self.item.result is None:
            return
        att = self.item.result.attention
        prefix = att.num_prefix_tokens if att is not None else 1  # CLS (and any register tokens) first
        self.hover_token = prefix + row * self.item.result.geometry.patch_grid[1] + col
        if not is_class_specific(self.panel.settings().kind):  # a class's map does not follow the mouse
            self.redraw(full=False)

    def _on_hover_left(self) -> None:
        if self.hover_token is not None:
            self.hover_token = None
            if not is_class_specific(self.panel.settings().kind):
                self.redraw(full=False)


def _same_overlay(a: tuple, b: tuple) -> bool:
    """The same drawing: the first item (a map or a result) is the same object, the rest equal.
    Redrawing only when something that shows changed keeps slider moves cheap on the GUI thread."""
    return a[0] is b[0] and a[1:] == b[1:]
