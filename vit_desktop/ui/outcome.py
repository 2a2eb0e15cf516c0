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
class Shown:
    result: object  # ClassificationResult | ImageFailure
    display: object | None  # the screen copy (pixels.ScreenCopy, made on the worker thread)
    thumb: np.ndarray | None = None  # uint8 RGB thumbnail
    detailed: bool = True  # full attention (q/k) and a display image; False for folder runs
