"""Classifiers taught from folders of examples (:mod:`vit_desktop.core.teach`).

A :class:`TaughtViT` is a backbone built by any other family (the demo model, a catalog ViT,
a checkpoint) with a new head: a linear layer over standardised features read from the
outputs of one or several encoder blocks — the query token (CLS, or the mean of the patch
tokens for a model without one) and the mean of the patch tokens, per block.  The blocks are
the backbone's own modules (fine-tuned ones included), wrapped by :class:`TapBlock` so that a
block whose output the head reads keeps it; the head reads the last block's output from the
tokens it is given.  So ``classify_tokens(blocks…(embed_tokens(x)))`` is the forward pass, and
every map, class-specific ones included, works as for any other model.

Such a model is never recognised from a state dict: it is opened from its own file format by
:mod:`vit_desktop.core.teach.saved`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import architectures as arch
from ..capture import attention_modules as _attention_modules
from ..capture import token_layout
from ..errors import CheckpointError
from ..results import TokenLayout

#: What a head can read from one block's output.
PARTS = ("query", "mean")


def query_and_mean(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(B, 2, D) of one block's output tokens (B, N, D): the query token (the CLS token, or for
    a model without one the mean of the patch tokens) and the mean of the patch tokens — what
    a head can read (:data:`PARTS`, in that order)."""
    mean = tokens[:, layout.num_prefix_tokens :].mean(dim=1)
    return torch.stack([tokens[:, 0] if layout.query == "cls" else mean, mean], dim=1)


@dataclass(frozen=True)
class FeatureSpec:
    """Which features the head reads: ``layers`` (block indices, negative from the end, in
    forward order) and per layer ``parts`` (:data:`PARTS`)."""

    layers: tuple[int, ...] = (-1,)
    parts: tuple[str, ...] = ("query", "mean")

    def indices(self, depth: int) -> tuple[int, ...]:
        """The layers as indices 0 … depth-1, sorted, without repeats; a CheckpointError when
        one is out of range."""
        out = []
        for layer in self.layers:
            if not -depth <= layer < depth:
                raise CheckpointError(f"layer {layer} is out of range for a backbone of {depth} blocks")
            out.append(layer % depth)
        return tuple(sorted(set(out)))

    def width(self, depth: int, model_width: int) -> int:
        return len(self.indices(depth)) * len(self.parts) * model_width

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "parts": list(self.parts)}

    @classmethod
    def from_dict(cls, obj: dict) -> FeatureSpec:
        layers = tuple(int(v) for v in obj.get("layers", (-1,)))
        parts = tuple(str(v) for v in obj.get("parts", ("query", "mean")))
        if not layers or not parts or any(p not in PARTS for p in parts):
            raise CheckpointError(f"the feature settings {obj!r} are not valid")
        return cls(layers, parts)


class TapBlock(nn.Module):
    """One backbone block; when ``tap`` is set its latest output stays in ``last`` (the head
    reads it).  Class-specific maps may put a tensor of the same value there (a leaf of their
    own graph) before asking for the logits."""

    def __init__(self, block: nn.Module, tap: bool) -> None:
        super().__init__()
        self.block = block
        self.tap = tap
        self.last: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        """A copy (deepcopy, pickling) starts without a kept output (it may be part of a graph)."""
        return {**self.__dict__, "last": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.tap:
            self.last = out
        return out


class TaughtViT(nn.Module):
    """A backbone and a linear head over standardised block features (see the module)."""

    def __init__(self, backbone: nn.Module, spec: FeatureSpec, num_classes: int) -> None:
        super().__init__()
        family = arch.family_for_module(backbone)
        hooks = ("embed_tokens", "encoder_blocks", "classify_tokens")
        if family is None or any(getattr(family, h) is None for h in hooks):
            raise CheckpointError("a classifier can only be taught on a backbone whose blocks are known")
        self.backbone = backbone
        self.backbone_family = family
        blocks = family.encoder_blocks(backbone)
        self.spec = spec
        self.layers = spec.indices(len(blocks))
        self.blocks = nn.ModuleList(TapBlock(b, i in self.layers[:-1]) for i, b in enumerate(blocks))
        self.parts = [PARTS.index(p) for p in spec.parts]
        width = self._width()
        features = spec.width(len(blocks), width)
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.head = nn.Linear(features, num_classes)
        self.num_classes = num_classes

    def _width(self) -> int:
        """The token width: a LayerNorm's in the last block (every ViT block has one)."""
        for m in self.blocks[-1].modules():
            if isinstance(m, nn.LayerNorm):
                return int(m.normalized_shape[-1])
        raise CheckpointError("the backbone's token width could not be read (no LayerNorm in its blocks)")

    @property
    def layout(self) -> TokenLayout:
        return token_layout(self.backbone)

    def block_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, parts·D) of one block's output tokens, the spec's parts in its order."""
        return query_and_mean(tokens, self.layout)[:, self.parts].flatten(1)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, F) raw features: the tapped blocks' (from :attr:`TapBlock.last`) then ``tokens``'s
        (the output of the last block the head reads)."""
        feats = []
        for i in self.layers[:-1]:
            last = self.blocks[i].last
            if last is None:
                raise RuntimeError(f"block {i}'s output was not kept: run the blocks first")
            feats.append(self.block_features(last))
        feats.append(self.block_features(tokens))
        return torch.cat(feats, dim=1)

    def classify_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head((feats - self.feature_mean) / self.feature_std)

    def classify_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits from the output of the last block the head reads (later blocks, if
        any, are not part of this model)."""
        return self.classify_features(self.features(tokens))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone_family.embed_tokens(self.backbone, x)

    def run(self, x: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """The tokens after blocks 0 … ``stop`` - 1 (all by default)."""
        tokens = self.embed(x)
        for blk in self.blocks[:stop]:
            tokens = blk(tokens)
        return tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.run(x, self.layers[-1] + 1)
        return self.classify_features(self.features(tokens))


def recognise(state) -> bool:
    """Never from tensors alone: a taught classifier is opened from its own file."""
    return False


def build(state, config, name: str) -> arch.Built:
    raise CheckpointError(f"{name}: a taught classifier is opened from its own file")


def encoder_blocks(module: TaughtViT) -> Sequence[nn.Module]:
    """The blocks up to the last one the head reads."""
    return list(module.blocks[: module.layers[-1] + 1])


def attention_modules(module: TaughtViT) -> list[nn.Module]:
    return _attention_modules(module.backbone)[: module.layers[-1] + 1]


def gradcam_layer(module: TaughtViT, index: int) -> nn.Module:
    fam = module.backbone_family
    if fam.gradcam_layer is None:
        raise ValueError("token Grad-CAM is not available for this backbone")
    return fam.gradcam_layer(module.backbone, index)


FAMILY = arch.register_module(
    globals(),
    "taught",
    "taught classifier",
    "a classifier file written by vit-desktop train",
    num_classes=lambda module: int(module.num_classes),
    owns_module=lambda module: isinstance(module, TaughtViT),
    embed_tokens=lambda module, x: module.embed(x),
    classify_tokens=lambda module, tokens: module.classify_tokens(tokens),
)
