"""Attention capture during the one forward pass that also gives the logits.

Every encoder block's ``nn.MultiheadAttention`` gets, for the duration of a ``with``
block, a replacement ``forward`` that computes the same thing as PyTorch's fused path (one
in-projection, ``scaled_dot_product_attention``, out-projection) and keeps only what the
app can show:

* the CLS token's attention row for every head (``softmax(q_cls·Kᵀ/√d)``, float32), and
* the queries and keys (float32), from which any other row, any head fusion and attention
  rollout are recomputed exactly on demand, without running the model again.  Where the
  float32 copy of one image's queries and keys would pass :data:`QK_FLOAT32_BUDGET` (ViT-H/14
  at 518 px: 449 MB) they are kept in float16 instead, and the result says its maps are
  approximate (:attr:`.results.AttentionResult.approximate`): a float16 rounding can flip which
  entries rollout's discard removes (up to 2.4e-3 on maps whose values are 5e-3–1.4e-2).

Why not ``need_weights=True``: that switches the module to its slow path and builds every
full (heads × N × N) matrix, which costs ~14% on ViT-B/16 and gigabytes on ViT-H/14 at
518 px.  Queries and keys cost 2·N·D numbers per layer instead of H·N².

The replacement is an instance attribute removed in ``__exit__`` whatever happens, so the
model is left exactly as it was (the same guarantee as a removable hook handle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .architectures import family_for_module
from .results import TokenLayout
from .tokenvit import Attention


def token_layout(model: nn.Module) -> TokenLayout:
    """The model's prefix tokens and query (:class:`.results.TokenLayout`): its own ``layout``
    when it has one (:class:`.tokenvit.TokenViT`), else one CLS token read by the head."""
    layout = getattr(model, "layout", None)
    return layout if isinstance(layout, TokenLayout) else TokenLayout()


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of the encoder, in forward order: the ones the model's
    registered family names (:attr:`.architectures.Family.attention_modules`), else every
    ``nn.MultiheadAttention`` (:func:`multihead_attention_modules`).  A family names modules of
    that type (whose forward is replaced below) or :class:`.tokenvit.Attention` modules (whose
    ``observer`` is set)."""
    family = family_for_module(model)
    if family is not None and family.attention_modules is not None:
        return family.attention_modules(model)
    return multihead_attention_modules(model)


def multihead_attention_modules(model: nn.Module) -> list[nn.MultiheadAttention]:
    """Every ``nn.MultiheadAttention`` in ``model``, in registration (forward) order; refused
    unless each is batch-first self-attention without extra key/value biases."""
    mods = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not mods:
        raise ValueError("the model has no nn.MultiheadAttention layers to capture")
    for m in mods:
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn or not m.batch_first:
            raise ValueError("only batch-first self-attention without extra k/v biases is supported")
    return mods


#: The most bytes one image's captured queries and keys may take in float32 (2 · layers ·
#: tokens · width · 4 B); beyond it they are kept in float16 (half of it) and the maps are
#: approximate.  Only the largest models pass it: ViT-H/14 at 518 px (449 MB); ViT-L/16 at
#: 512 px (201 MB), ViT-H/14 at 224 px (84 MB) and ViT-B/16 (15 MB) stay exact.
QK_FLOAT32_BUDGET = 256 << 20


#: The float32 queries and keys of a whole batch must also fit this (a folder run's batch of 8
#: ViT-L/16 at 512 px would take 1.6 GB): past it, the batch keeps float16 copies.
QK_FLOAT32_BATCH_BUDGET = 1 << 30


def qk_dtype(layers: int, heads: int, tokens: int, head_dim: int, batch: int = 1) -> torch.dtype:
    """float32 when one image's queries and keys fit :data:`QK_FLOAT32_BUDGET` and the batch's
    fit :data:`QK_FLOAT32_BATCH_BUDGET`, else float16."""
    one = 2 * layers * heads * tokens * head_dim * 4
    fits = one <= QK_FLOAT32_BUDGET and batch * one <= QK_FLOAT32_BATCH_BUDGET
    return torch.float32 if fits else torch.float16


@dataclass
class _Store:
    keep_qk: bool
    num_layers: int
    cls_rows: list[torch.Tensor] = field(default_factory=list)  # each (B, H, N) float32
    # Queries and keys go straight into one preallocated (B, L, H, N, d) buffer each (float32,
    # or float16 past the budget), so collecting them never needs a second copy.
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None

    def record(self, cls_row: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
        layer = len(self.cls_rows)
        self.cls_rows.append(cls_row)
        if not self.keep_qk:
            return
        if self.q is None:
            b, h, n, d = q.shape
            shape = (b, self.num_layers, h, n, d)
            dtype = qk_dtype(self.num_layers, h, n, d, b)
            self.q = torch.empty(shape, dtype=dtype, device="cpu")
            self.k = torch.empty(shape, dtype=dtype, device="cpu")
        if self.q.dtype == torch.float16 and max(float(q.abs().amax()), float(k.abs().amax())) > _FP16_MAX:
            # Beyond float16's range the maps would turn to NaN: keep this result in float32.
            self.q, self.k = self.q.float(), self.k.float()
        self.q[:, layer].copy_(q)
        self.k[:, layer].copy_(k)


_FP16_MAX = 65504.0


def _query_row(q: torch.Tensor, k: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(B, H, N) float32 on the CPU: the CLS token's attention row, or for a model that pools
    the mean of its tokens the mean of the patch tokens' rows."""
    scale = q.shape[-1] ** -0.5
    kt = k.float().transpose(-2, -1)
    if layout.query == "cls":
        return torch.softmax((q[:, :, :1].float() * scale) @ kt, dim=-1)[:, :, 0].cpu()
    rows = torch.softmax((q[:, :, layout.num_prefix_tokens :].float() * scale) @ kt, dim=-1)
    return rows.mean(dim=2).cpu()


def _observer(store: _Store, layout: TokenLayout):
    def observe(q: torch.Tensor, k: torch.Tensor) -> None:
        store.record(_query_row(q, k, layout), q, k)

    return observe


def _make_forward(mha: nn.MultiheadAttention, store: _Store):
    heads = mha.num_heads

    def forward(query, key=None, value=None, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):  # fmt: skip
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise ValueError("attention capture supports unmasked self-attention only")
        if key is not None and key is not query:
            raise ValueError("attention capture supports self-attention only")
        b, n, d_model = query.shape
        hd = d_model // heads
        qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, hd)
        out = F.scaled_dot_product_attention(q, k, v)
        out = F.linear(out.transpose(1, 2).reshape(b, n, d_model), mha.out_proj.weight, mha.out_proj.bias)
        store.record(_query_row(q, k, TokenLayout()), q, k)
        return out, None

    return forward


class AttentionHooks:
    """A ``with`` block that instruments attention modules and always puts them back: each
    :class:`.tokenvit.Attention` gets a callback in its ``attr`` attribute (:meth:`hook`), each
    ``nn.MultiheadAttention`` a replacement ``forward`` as an instance attribute
    (:meth:`forward`); both are removed in ``__exit__`` whatever happens.  ``targets`` are
    (block index, module) pairs; ``what`` names the instrumenting in the error for a module of
    another kind."""

    attr = "observer"
    what = "attention capture"

    def __init__(self, targets: list[tuple[int, nn.Module]]) -> None:
        self.targets = targets
        self.modules = [m for _, m in targets]

    def hook(self, index: int, module: Attention):
        raise NotImplementedError

    def forward(self, index: int, module: nn.MultiheadAttention):
        raise NotImplementedError

    def __enter__(self):
        try:
            for i, m in self.targets:
                if isinstance(m, Attention):
                    setattr(m, self.attr, self.hook(i, m))
                elif isinstance(m, nn.MultiheadAttention):
                    m.forward = self.forward(i, m)
                else:
                    raise ValueError(f"{self.what} cannot see into a {type(m).__name__}")
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self) -> None:
        for m in self.modules:
            if isinstance(m, Attention):
                setattr(m, self.attr, None)
            else:
                m.__dict__.pop("forward", None)

    def __exit__(self, *exc) -> None:
        self._remove()


class AttentionCapture(AttentionHooks):
    """``with AttentionCapture(model) as cap: logits = model(x)`` then ``cap.collect()``."""

    def __init__(self, model: nn.Module, keep_qk: bool = True) -> None:
        super().__init__(list(enumerate(attention_modules(model))))
        self.layout = token_layout(model)
        self.store = _Store(keep_qk, len(self.modules))

    def hook(self, index: int, module: Attention):
        return _observer(self.store, self.layout)

    def forward(self, index: int, module: nn.MultiheadAttention):
        return _make_forward(module, self.store)

    def collect(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(cls (B, L, H, N) float32, q (B, L, H, N, d) float32 (float16 past
        :data:`QK_FLOAT32_BUDGET`) or None, k likewise)."""
        s = self.store
        if not s.cls_rows:
            raise RuntimeError("no attention was captured: did the forward pass run?")
        if len(s.cls_rows) != len(self.modules):
            raise RuntimeError(f"captured {len(s.cls_rows)} of {len(self.modules)} attention layers")
        cls = torch.stack(s.cls_rows, dim=1).float().numpy()
        if not s.keep_qk:
            return cls, None, None
        return cls, s.q.numpy(), s.k.numpy()
