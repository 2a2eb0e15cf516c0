"""The maps the Attention panel offers, and the frozen requests and answers of the
class-specific ones — torch-free, so the window is up before PyTorch is imported.

The class-agnostic kinds are drawn on the GUI thread from the cached attention
(:mod:`.overlay_view`); the class-specific methods are :mod:`vit_desktop.core.explain`'s,
computed in the worker (:mod:`.explain_worker`) and cached by the window
(:mod:`.explain_view`).  Their names, titles and controls are the core's own
(:mod:`vit_desktop.core.method_names`, torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.method_names import CLASS_METHODS, CONTROLS, TITLES  # noqa: F401 (re-exported for the panel)

#: The maps computed from the captured attention (the panel's own kinds).
AGNOSTIC_KINDS = (("cls", "CLS attention"), ("fused", "Fused heads"), ("rollout", "Attention rollout"))

#: The panel's controls each map kind uses (the others are greyed out).  Attention ×
#: gradient fuses its heads with the Fusion setting (the panel's Head picks the head of
#: CLS attention only).
PANEL_CONTROLS = {
    "cls": ("layer", "head", "query"),
    "fused": ("layer", "fusion", "query"),
    "rollout": ("fusion", "discard", "query"),
    "chefer": (),
    "gradcam": ("layer",),
    "attn-grad": ("layer", "fusion"),
    "occlusion": (),
}

#: The first class-specific map a click on a prediction shows when the map on screen is a
#: class-agnostic one (which would look the same for every class).
FIRST_CLASS_METHOD = "chefer"


def is_class_specific(kind: str | None) -> bool:
    return kind in CLASS_METHODS


@dataclass(frozen=True)
class MapRequest:
    """One class-specific map of one image: the method, the class and the controls the
    method takes (the others at their defaults, so that equal maps have equal requests:
    it is the window's cache key)."""

    method: str
    target: int
    layer: int = -1
    fusion: str | None = None

    @classmethod
    def of(cls, method: str, target: int, layer: int, fusion: str) -> MapRequest:
        used = PANEL_CONTROLS[method]
        return cls(
            method, int(target), layer if "layer" in used else -1, fusion if "fusion" in used else None
        )

    @property
    def title(self) -> str:
        return TITLES[self.method]


@dataclass(frozen=True)
class MapAnswer:
    """The worker's answer: ``grid_map`` (rows, cols) float32, read-only, raw."""

    key: object
    seq: int
    request: MapRequest
    grid_map: np.ndarray
    seconds: float

    def __post_init__(self) -> None:
        self.grid_map.setflags(write=False)


@dataclass(frozen=True)
class ScoreRequest:
    """The faithfulness of one map (any kind): the map as drawn and the class it is scored for."""

    grid_map: np.ndarray
    target: int
    title: str
    baseline: object = None  # a score of the same image and class: its random-order curves are reused

    def __post_init__(self) -> None:
        self.grid_map.setflags(write=False)


@dataclass(frozen=True)
class ScoreAnswer:
    key: object
    seq: int
    faithfulness: object  # core.faithfulness.Faithfulness (frozen numpy)
    seconds: float


@dataclass(frozen=True)
class ExplainFailure:
    """A map or a score that did not come: ``what`` "map" or "score"; ``cancelled`` when
    Cancel was pressed (a request replaced by a newer one is dropped without a word)."""

    key: object
    seq: int
    what: str
    message: str
    cancelled: bool = False
