"""Drawing the overlay of the image on screen from its cached result: the map the
Attention panel asks for (or the hovered patch's row), the per-head maps, and the overlay
raster through the preprocessing geometry.  Never runs the model: a class-specific map
comes from :attr:`OverlayPresenter.class_maps` (the window's cache, which asks the worker
for a map it does not have; meanwhile the overlay on screen stays).

A new result arrives with its map, overlay raster and per-head maps already drawn by the
worker for the settings the panel showed (:func:`.render.drawing`, asked through
:meth:`OverlayPresenter.wanted`); they are put on screen as they are while the panel still
shows those settings, and drawn here otherwise."""

from __future__ import annotations

import dataclasses

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QPixmap

from ..core import maps
from . import render
from .image_view import ImageView
from .methods import is_class_specific
from .panels import AttentionPanel, ViewSettings
from .session import Item
from .settings import Settings


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
        self._saved: dict | None = None  # the overlay settings last saved
        #: Where class-specific maps come from: ``map_for(item, view_settings)`` gives the
        #: cached map or None (then asks for it); ``waiting(item, view_settings)`` tells
        #: whether it is on its way.  Set by :class:`.explain_view.ExplainController`.
        self.class_maps = None
        self._wanted = self._snapshot(panel.settings())
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
            self._adopt(item)
        self.redraw()
        self.shown.emit()

    def wanted(self) -> ViewSettings:
        """The map settings the worker draws a new result for (called on the worker thread:
        a frozen snapshot the GUI thread replaces whenever a control moves).  Its layer is -1
        while the slider is at its end, which a new model's slider keeps."""
        return self._wanted

    def _snapshot(self, s: ViewSettings) -> ViewSettings:
        slider = self.panel.layer
        return dataclasses.replace(s, layer=-1) if slider.value() == slider.maximum() else s

    def _adopt(self, item: Item) -> None:
        """Take the parts of the worker's drawing of ``item`` that were made for the settings
        the panel shows now (the rest :meth:`redraw` computes)."""
        d, res = item.drawing, item.result
        if d is None or not item.detailed:
            return
        s, att = self.panel.settings(), res.attention
        if d.grid is not None and not is_class_specific(s.kind) and d.map_key == (s.map_spec(), s.query):
            memo = self._map_memo
            if memo is None or memo[0] is not att or memo[1] != d.map_key:
                self._map_memo = (att, d.map_key, d.grid)
            grid = self._map_memo[2]
            key = (grid, res.geometry, s.cmap, s.opacity)
            if grid is d.grid and d.overlay_key == key[2:] and not _same_overlay(self._overlay_key, key):
                self.view.set_overlay(d.overlay)
                self._overlay_key = key
        heads = (att, *d.heads_key)
        if d.heads_key == (render.heads_layer(att, s.layer), s.cmap, s.query) and not _same_overlay(
            self._heads_key, heads
        ):
            self.panel.set_head_images([QPixmap.fromImage(i) for i in d.heads])
            self.panel.set_prefix_note(d.heads_note)
            self._heads_key = heads

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
        self._wanted = self._snapshot(s)
        saved = dict(kind=s.kind, fusion=s.fusion, discard=s.discard, opacity=s.opacity, cmap=s.cmap)
        if full and saved != self._saved:  # saving schedules a write of the settings file: only a change
            self.settings.set_overlay(**saved)
            self._saved = saved
        item, grid = self.item, self.current_map()
        if item is None or item.display is None or item.result is None:
            self._clear_overlay()
            return
        if grid is not None:
            geom = item.result.geometry
            key = (grid, geom, s.cmap, s.opacity)
            if not _same_overlay(self._overlay_key, key):
                self.view.set_overlay(render.overlay_image(grid, geom, s.cmap, s.opacity))
                self._overlay_key = key
        elif self.class_maps is None or not self.class_maps.waiting(item, s):
            self._clear_overlay()  # (a class-specific map on its way: the overlay on screen stays)
        if full and item.detailed and item.result.attention is not None:
            att = item.result.attention
            layer = render.heads_layer(att, s.layer)
            heads = (att, layer, s.cmap, s.query)
            if not _same_overlay(self._heads_key, heads):
                images = render.heads_grid(att, layer, s.cmap, query=s.query)
                self.panel.set_head_images([QPixmap.fromImage(i) for i in images])
                self.panel.set_prefix_note(render.register_share(att, layer, s.query))
                self._heads_key = heads
        if grid is not None:
            self.drawn.emit()

    def _clear_overlay(self) -> None:
        if self.view._overlay is not None:  # (no repaint when there is nothing to take away)
            self.view.set_overlay(None)
        self._overlay_key = None

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


def _same_overlay(a: tuple | None, b: tuple) -> bool:
    """The same drawing: the first item (a map or a result) is the same object, the rest equal.
    Redrawing only when something that shows changed keeps slider moves cheap on the GUI thread."""
    return a is not None and a[0] is b[0] and a[1:] == b[1:]
