"""What the worker hands the window for one image, and how a failure becomes one line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.text import one_line
from ..logs import get_logger

log = get_logger("worker")


def explain(what: str, exc: BaseException) -> str:
    """The one line a person sees; the log keeps a traceback only for the unexpected."""
    from ..core.errors import VitDesktopError

    if isinstance(exc, VitDesktopError):
        log.warning("%s: %s", what, exc.one_line())
    else:
        log.exception(what)
    return one_line(exc)


@dataclass(frozen=True)
class Drawing:
    """A new result's overlay and per-head maps, drawn in the worker for the map settings the
    Attention panel showed then (:func:`.render.drawing`).  Each part carries the settings it
    was made for; the window puts a part on screen only while the panel still shows them, and
    draws it itself otherwise (latest settings win)."""

    map_key: tuple | None  # (maps.MapSpec, query token) of ``grid``; None: a class-specific map
    grid: np.ndarray | None  # the map (patch grid)
    overlay_key: tuple  # (colour map, opacity) of ``overlay``
    overlay: object | None  # QImage (RGBA, render.overlay_size): may be made off the GUI thread
    heads_key: tuple  # (layer, colour map, query token) of ``heads``
    heads: tuple  # one small RGB QImage per head
    heads_note: str  # the share of attention that goes to register tokens ("" without them)


@dataclass(frozen=True)
class Shown:
    result: object  # ClassificationResult | ImageFailure
    display: object | None  # the screen copy (pixels.ScreenCopy, made on the worker thread)
    thumb: np.ndarray | None = None  # uint8 RGB thumbnail
    detailed: bool = True  # full attention (q/k) and a display image; False for folder runs
    drawing: Drawing | None = None  # the overlay and per-head maps, drawn in the worker
