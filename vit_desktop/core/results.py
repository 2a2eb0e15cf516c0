"""Frozen results of classification: numpy arrays only, no tensors, no Qt objects.

The worker thread hands these to the GUI, which renders any map from them on its own
thread without running the model again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .preprocess import Geometry


def _freeze(*arrays: np.ndarray | None) -> None:
    for a in arrays:
        if a is not None:
            a.setflags(write=False)


@dataclass(frozen=True)
class TokenLayout:
    """The tokens in front of the patches, and which one the model classifies from.

    ``prefix``: the names of the tokens before the patch tokens, in order (``("CLS",)`` for
    most ViTs; ``("CLS", "distillation")`` for a distilled DeiT; ``("CLS", "register 1", …)``
    with register tokens; ``()`` for a model without a CLS token).  ``query``: ``"cls"`` when the
    head reads the CLS token (the maps show what it looked at), ``"mean"`` when it reads the mean
    of the tokens (the maps show the mean of the patch tokens' attention instead)."""

    prefix: tuple[str, ...] = ("CLS",)
    query: str = "cls"

    def __post_init__(self) -> None:
        if self.query not in ("cls", "mean"):
            raise ValueError(f"unknown query {self.query!r}")
        if self.query == "cls" and not self.prefix:
            raise ValueError("a CLS query needs a prefix token")

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix)

    @property
    def registers(self) -> tuple[int, ...]:
        """The indices of the register tokens."""
        return tuple(i for i, n in enumerate(self.prefix) if n.startswith("register"))

    def describe_query(self) -> str:
        """What the maps' rows are, in words, for the panel."""
        if self.query == "cls":
            return "the CLS token"
        return "the mean of the patch tokens (this model has no CLS token)"


@dataclass(frozen=True)
class AttentionResult:
    """What one forward pass saw, for one image.

    ``cls``: (layers, heads, tokens) float32, the query's row of every head: the CLS token's
    attention, or for a model without one (``layout.query == "mean"``) the mean of the patch
    tokens' attention rows.
    ``q``, ``k``: (layers, heads, tokens, head_dim) float32 or None; any other attention row,
    head fusion or rollout is recomputed from them exactly (to float32 rounding).  Models whose
    float32 copy would pass :data:`.capture.QK_FLOAT32_BUDGET` (ViT-H/14 at 518 px) keep them
    in float16 (float32 again where a value exceeds float16's range): then :attr:`approximate`
    is true and the panel says so.
    """

    cls: np.ndarray
    q: np.ndarray | None
    k: np.ndarray | None
    grid: tuple[int, int]  # (rows, cols)
    layout: TokenLayout = TokenLayout()

    @property
    def num_prefix_tokens(self) -> int:
        return self.layout.num_prefix_tokens

    def __post_init__(self) -> None:
        _freeze(self.cls, self.q, self.k)
        rows, cols = self.grid
        if self.cls.shape[-1] != rows * cols + self.num_prefix_tokens:
            raise ValueError(
                f"{self.cls.shape[-1]} tokens do not match a {rows}×{cols} grid plus "
                f"{self.num_prefix_tokens} prefix token(s)"
            )

    @property
    def approximate(self) -> bool:
        """True when the queries and keys were kept in float16 (past the memory budget): rows
        other than the query's, head fusions and rollout are then approximate (the query's own
        rows, ``cls``, are always float32)."""
        return self.q is not None and self.q.dtype == np.float16

    @property
    def num_layers(self) -> int:
        return int(self.cls.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.cls.shape[1])

    @property
    def num_tokens(self) -> int:
        return int(self.cls.shape[2])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.cls, self.q, self.k) if a is not None)


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    prob: float

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "prob": round(self.prob, 6)}


@dataclass(frozen=True)
class ClassificationResult:
    source: str  # the path or a description of where the image came from
    model_id: str
    device: str
    top_k: tuple[Prediction, ...]
    probs: np.ndarray  # (num_classes,) float32, softmax
    geometry: Geometry
    latency_ms: float  # this image's share of decode + preprocess + forward (+ capture)
    attention: AttentionResult | None = None
    attention_peak: tuple[float, float] | None = None  # default map's peak, original px

    def __post_init__(self) -> None:
        _freeze(self.probs)

    @property
    def top1(self) -> Prediction:
        return self.top_k[0]

    def to_dict(self) -> dict:
        """The command line's JSON object for this image."""
        g = self.geometry
        return {
            "path": self.source,
            "model": self.model_id,
            "device": self.device,
            "top_k": [p.to_dict() for p in self.top_k],
            "latency_ms": round(self.latency_ms, 2),
            "image_size": list(g.original_size),
            "crop_box": [round(v, 2) for v in g.crop_box],
            "patch_grid": list(g.patch_grid),
            "attention_peak": (
                [round(self.attention_peak[0], 1), round(self.attention_peak[1], 1)]
                if self.attention_peak is not None
                else None
            ),
        }


@dataclass(frozen=True)
class ImageFailure:
    source: str
    error: str

    def to_dict(self) -> dict:
        return {"path": self.source, "error": self.error}
