"""A model as the class-specific maps see it: three parts and explicit attention.

:func:`parts_of` splits any model a family can describe (:class:`.architectures.Family`'s
``embed_tokens``, ``encoder_blocks``, ``classify_tokens`` and ``gradcam_layer`` hooks) into

* the tokens the first block takes (:meth:`Parts.embed`),
* the blocks, each with its attention module (:attr:`Parts.blocks`, :attr:`Parts.attention`),
* the logits from the last block's output (:meth:`Parts.classify`),

so that a method can run the blocks one at a time (to recompute one block's graph for its
backward pass, or to run a shorter sequence of tokens), and ``classify(blocks(embed(x)))`` is
the model's own forward pass, with the same arithmetic.

:class:`ExplicitAttention` makes every attention module compute its probabilities explicitly,
A = softmax(q·kᵀ/√d) and out = A·v, and hands A to a callback before it is used: a
:class:`.tokenvit.Attention` through its ``explicit`` attribute, an ``nn.MultiheadAttention``
(torchvision, the minimal ViT) through a replacement ``forward`` like :mod:`.capture`'s.
Both are removed on exit whatever happens, so the model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .architectures import Family, family_for_module
from .capture import AttentionHooks, attention_modules, token_layout
from .results import TokenLayout
from .tokenvit import Attention

OnAttention = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class Parts:
    """One model in three parts (see the module's docstring)."""

    module: nn.Module
    family: Family
    layout: TokenLayout
    blocks: tuple[nn.Module, ...]
    attention: tuple[nn.Module, ...]  # attention[i] is inside blocks[i]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens (B, N, D) the first block takes."""
        return self.family.embed_tokens(self.module, x)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits (B, classes) from the last block's output tokens."""
        return self.family.classify_tokens(self.module, tokens)

    def run_blocks(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start`` … ``stop - 1`` applied to ``tokens``."""
        for blk in self.blocks[start:stop]:
            tokens = blk(tokens)
        return tokens

    def head_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every block, then the logits: what the model computes from the embedded tokens."""
        return self.classify(self.run_blocks(tokens))

    def gradcam_layer(self, index: int) -> nn.Module:
        """Block ``index``'s first LayerNorm (the layer token Grad-CAM reads)."""
        return self.family.gradcam_layer(self.module, index)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def tapped(self) -> tuple[int, ...]:
        """Blocks before the last whose output the head reads too (a taught classifier's
        :class:`.families.taught.TapBlock` with ``tap`` set keeps it in ``last``)."""
        return tuple(i for i, b in enumerate(self.blocks[:-1]) if getattr(b, "tap", False))

    def layer_index(self, layer: int) -> int:
        """``layer`` (negative counts from the end) as an index; an IndexError out of range."""
        if not -self.depth <= layer < self.depth:
            raise IndexError(f"layer {layer} out of range for {self.depth} layers")
        return layer % self.depth

    def query_vector(self, n_tokens: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N,) float32: the model's query as weights over the tokens — one on the CLS token, or
        for a model without one the mean of the patch tokens (row ``v @ M`` of a matrix ``M``
        is then the query's row)."""
        v = torch.zeros(n_tokens, dtype=torch.float32, device=device)
        p = self.layout.num_prefix_tokens
        if self.layout.query == "cls":
            v[0] = 1.0
        else:
            v[p:] = 1.0 / (n_tokens - p)
        return v


def parts_of(module: nn.Module) -> Parts:
    """``module`` in three parts; a ValueError saying so for a model whose family does not
    describe them."""
    family = family_for_module(module)
    hooks = ("embed_tokens", "encoder_blocks", "classify_tokens", "gradcam_layer")
    if family is None or any(getattr(family, h) is None for h in hooks):
        what = f"the {family.title} family" if family is not None else f"a {type(module).__name__}"
        raise ValueError(f"class-specific maps are not available for {what}: its blocks are not known")
    blocks = tuple(family.encoder_blocks(module))
    attn = tuple(attention_modules(module))
    if len(blocks) != len(attn) or not blocks:
        raise ValueError(f"class-specific maps need one attention module per block ({len(blocks)} blocks, "
                         f"{len(attn)} attention modules)")  # fmt: skip
    return Parts(module, family, token_layout(module), blocks, attn)


def _explicit_forward(mha: nn.MultiheadAttention, index: int, on_attention: OnAttention):
    """``mha.forward`` computed explicitly (the same arithmetic as ``need_weights=True``)."""
    heads = mha.num_heads

    def forward(query, key=None, value=None, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):  # fmt: skip
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise ValueError("class-specific maps support unmasked self-attention only")
        if key is not None and key is not query:
            raise ValueError("class-specific maps support self-attention only")
        b, n, d_model = query.shape
        hd = d_model // heads
        qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, hd)
        attn = ((q * hd**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        on_attention(index, attn)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d_model)
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias), None

    return forward


class ExplicitAttention(AttentionHooks):
    """``with ExplicitAttention(parts, on_attention):`` every attention module (or only block
    ``only``'s) computes A = softmax(q·kᵀ/√d) explicitly and calls ``on_attention(block_index,
    A)`` with it (B, H, N, N) before out = A·v."""

    attr = "explicit"
    what = "class-specific maps"

    def __init__(self, parts: Parts, on_attention: OnAttention, only: int | None = None) -> None:
        indices = range(parts.depth) if only is None else (parts.layer_index(only),)
        super().__init__([(i, parts.attention[i]) for i in indices])
        self.on_attention = on_attention

    def hook(self, index: int, module: Attention):
        return lambda a: self.on_attention(index, a)

    def forward(self, index: int, module: nn.MultiheadAttention):
        return _explicit_forward(module, index, self.on_attention)


class LastAttention:
    """An ``on_attention`` callback that keeps the latest A of each block (what the block
    that just ran computed); :meth:`take` hands it over and forgets it."""

    def __init__(self) -> None:
        self.seen: dict[int, torch.Tensor] = {}

    def __call__(self, index: int, attn: torch.Tensor) -> None:
        self.seen[index] = attn

    def take(self, index: int) -> torch.Tensor:
        return self.seen.pop(index)

    def clear(self) -> None:
        self.seen.clear()
