"""The class-specific methods on tensors: Chefer et al.'s relevance, token Grad-CAM,
attention × gradient and token occlusion (:mod:`.explain` is the API over them).

Each takes a model in parts (:func:`.explain_model.parts_of`), one preprocessed image
``x`` (1, 3, H, W) float32 on the model's device, and a target class index, and returns a
float32 vector on the CPU: over every token (``chefer_row``, ``attn_grad_row``: the query's
row, prefix tokens first) or over the patch tokens (``gradcam_patches``,
``occlusion_patches``).

Gradients are taken with ``torch.autograd.grad`` with respect to the tokens and the attention
probabilities only: no parameter's ``.grad`` is ever written, and the model's own forward
code runs (attention made explicit by :class:`.explain_model.ExplicitAttention`, removed
afterwards).  Gradients flow through the blocks one at a time: each block's graph is its own
(its input detached), and the gradient with respect to a block's output is carried to the
block before it.  That gives the same numbers as one backward pass through the whole model
and lets Chefer's method either keep every block's graph from the forward pass (small models)
or rebuild one block's graph at a time during the backward pass (``recompute``: the memory is
the block inputs and one block's graph; exact, as the recomputation runs the same arithmetic
on the same inputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from .errors import VitDesktopError
from .explain_model import ExplicitAttention, LastAttention, Parts

Cancel = Callable[[], bool]

#: Chefer's method keeps every block's graph from the forward pass while its estimated size
#: (:func:`chefer_graph_bytes`) is at most this; beyond it each block is recomputed during
#: the backward pass (ViT-H/14 at 518 px: ~11 GB kept; recomputed, ~0.7 GB peak measured).
CHEFER_GRAPH_BUDGET = 512 << 20

#: Token occlusion runs up to this many shortened sequences per forward pass, fewer where
#: their activations would pass :data:`OCCLUSION_BATCH_BYTES`.
OCCLUSION_BATCH = 32
OCCLUSION_BATCH_BYTES = 512 << 20

FUSIONS = ("mean", "max", "min")


class Cancelled(VitDesktopError):
    """An explanation was cancelled (checked between blocks or batches)."""


def _check(cancel: Cancel | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("the explanation was cancelled")


@contextlib.contextmanager
def _grad_mode() -> Iterator[None]:
    """Autograd on, whatever the caller's mode (inference mode included)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _input(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"explanations take one image, a (1, 3, H, W) batch, not {tuple(x.shape)}")
    return x.clone() if x.is_inference() else x


def _logit(logits: torch.Tensor, target: int) -> torch.Tensor:
    n = logits.shape[-1]
    if not 0 <= target < n:
        raise IndexError(f"class index {target} out of range for {n} classes")
    return logits[:, target].sum()


def _fuse(a: torch.Tensor, fusion: str, dim: int = 0) -> torch.Tensor:
    if fusion == "mean":
        return a.mean(dim=dim)
    if fusion == "max":
        return a.amax(dim=dim)
    if fusion == "min":
        return a.amin(dim=dim)
    raise ValueError(f"unknown head fusion {fusion!r}")


def _embedded(parts: Parts, x: torch.Tensor, upto: int = 0) -> torch.Tensor:
    """The input of block ``upto`` (no graph)."""
    with torch.no_grad():
        return parts.run_blocks(parts.embed(x), 0, upto).detach()


def chefer_graph_bytes(parts: Parts, tokens: int, width: int) -> int:
    """About what keeping every block's graph costs for one image: per block the attention
    probabilities and their gradient (3·H·N² floats) and ~24 token-wide activations."""
    heads = getattr(parts.attention[0], "num_heads", None) or parts.attention[0].heads
    return parts.depth * 4 * (3 * heads * tokens * tokens + 24 * tokens * width)


def chefer_row(parts: Parts, x: torch.Tensor, target: int, *, recompute: bool | None = None,
               cancel: Cancel | None = None) -> torch.Tensor:  # fmt: skip
    """The query's row of Chefer et al.'s relevance (N,): R = I; per block, in forward order,
    Ā = mean over heads of (∇A ⊙ A)⁺ and R ← R + Ā·R, with ∇A the gradient of the target
    logit with respect to the block's attention probabilities A.  R = (I + Ā_{L-1})…(I + Ā_0),
    so its query row is built from the last block down, as the backward pass delivers the Ā:
    r ← r + r·Ā (N² per block, no N×N product kept).  ``recompute`` None: keep the graphs
    unless :func:`chefer_graph_bytes` passes :data:`CHEFER_GRAPH_BUDGET`."""
    x = _input(x)
    seen = LastAttention()
    with _grad_mode(), ExplicitAttention(parts, seen):
        h = _embedded(parts, x)
        n = h.shape[1]
        if recompute is None:
            recompute = chefer_graph_bytes(parts, n, h.shape[-1]) > CHEFER_GRAPH_BUDGET
        saved: list = []
        for i, blk in enumerate(parts.blocks):
            _check(cancel)
            if recompute:
                saved.append(h)
                with torch.no_grad():
                    h = blk(h)
                seen.clear()
            else:
                h.requires_grad_(True)
                y = blk(h)
                saved.append((h, y, seen.take(i)))
                h = y.detach()
        h.requires_grad_(True)
        # A head that reads earlier blocks too (parts.tapped) reads block i's output as the
        # saved input of block i + 1: its gradient there joins the one carried back.
        direct: dict[int, torch.Tensor] = {}
        for i in parts.tapped:
            leaf = (saved[i + 1] if recompute else saved[i + 1][0]).requires_grad_(True)
            parts.blocks[i].last = direct[i] = leaf
        g, *more = torch.autograd.grad(_logit(parts.classify(h), target), (h, *direct.values()))
        direct = dict(zip(direct, more))
        r = parts.query_vector(n, x.device)
        for i in reversed(range(parts.depth)):
            _check(cancel)
            if recompute:
                xin = saved[i].requires_grad_(True)
                y = parts.blocks[i](xin)
                a = seen.take(i)
            else:
                xin, y, a = saved[i]
            saved[i] = None
            wrt = (a, xin) if i else (a,)
            grads = torch.autograd.grad(y, wrt, g)
            del y  # this block's graph is gone; A's values stay (in ``a``) for Ā
            with torch.no_grad():  # Ā and r must not join a graph: it would keep every block's A
                abar = torch.zeros(n, n, dtype=torch.float32, device=x.device)
                for hd in range(a.shape[1]):  # head by head: no (H, N, N) temporary
                    abar += (grads[0][0, hd] * a[0, hd]).clamp_(min=0)
                abar /= a.shape[1]
                r = r + r @ abar
            g = grads[1] if i else None
            if i - 1 in direct:
                g = g + direct.pop(i - 1)
            del a, xin, grads, abar
    return r.detach().float().cpu()


def attn_grad_row(parts: Parts, x: torch.Tensor, target: int, *, layer: int = -1, head: int | None = None,
                  fusion: str = "mean") -> torch.Tensor:  # fmt: skip
    """Attention × gradient of one layer (the last by default): the query's row (N,) of
    (∇A ⊙ A)⁺, one head or the heads fused with ``fusion`` (mean: Chefer's Ā of that layer)."""
    x = _input(x)
    li = parts.layer_index(layer)
    seen = LastAttention()
    with _grad_mode():
        h = _embedded(parts, x, li).requires_grad_(True)
        with ExplicitAttention(parts, seen, only=li):
            y = parts.blocks[li](h)
        a = seen.take(li)
        logit = _logit(parts.classify(parts.run_blocks(y, li + 1)), target)
        (ga,) = torch.autograd.grad(logit, a)
    with torch.no_grad():
        pos = (ga * a).clamp_(min=0)[0]  # (H, N, N)
        if head is not None:
            if not 0 <= head < pos.shape[0]:
                raise IndexError(f"head {head} out of range for {pos.shape[0]} heads")
            fused = pos[head]
        else:
            fused = _fuse(pos, fusion)
        return (parts.query_vector(fused.shape[0], fused.device) @ fused).float().cpu()


def gradcam_patches(parts: Parts, x: torch.Tensor, target: int, *, layer: int = -1) -> torch.Tensor:
    """Token Grad-CAM (P,) as pytorch-grad-cam computes it for a ViT: at the output of block
    ``layer``'s first LayerNorm, the patch tokens' activations A (P, D) (prefix tokens dropped:
    its ViT reshape transform drops the CLS token) and the gradients G of the target logit;
    weights w = G averaged over the patches; cam = ReLU(A·w)."""
    x = _input(x)
    li = parts.layer_index(layer)
    acts: list[torch.Tensor] = []
    with _grad_mode():
        h = _embedded(parts, x, li).requires_grad_(True)
        handle = parts.gradcam_layer(li).register_forward_hook(lambda _m, _i, out: acts.append(out))
        try:
            logits = parts.classify(parts.run_blocks(h, li))
        finally:
            handle.remove()
        (g,) = torch.autograd.grad(_logit(logits, target), acts[0])
    p = parts.layout.num_prefix_tokens
    with torch.no_grad():
        a, g = acts[0][0, p:], g[0, p:]
        return (a * g.mean(dim=0)).sum(dim=1).clamp_(min=0).float().cpu()


def occlusion_batch(parts: Parts, tokens: int, width: int) -> int:
    """Shortened sequences per forward pass: :data:`OCCLUSION_BATCH`, fewer for a model whose
    attention matrices and activations per sequence would pass :data:`OCCLUSION_BATCH_BYTES`."""
    heads = getattr(parts.attention[0], "num_heads", None) or parts.attention[0].heads
    per_sequence = 4 * (heads * tokens * tokens + 8 * tokens * width)
    return max(1, min(OCCLUSION_BATCH, OCCLUSION_BATCH_BYTES // per_sequence))


def occlusion_patches(parts: Parts, x: torch.Tensor, target: int, *, batch_size: int | None = None,
                      cancel: Cancel | None = None) -> torch.Tensor:  # fmt: skip
    """Token occlusion (P,): for each patch token, the target logit of the whole image minus
    the logit with that token removed from the sequence (after the position embeddings are
    added, so every other token keeps its position).  A positive value: the patch supported
    the class.  ``batch_size`` shortened sequences per forward pass (None:
    :func:`occlusion_batch`); ``cancel`` is checked between batches."""
    x = _input(x)
    with torch.inference_mode():
        tokens = parts.embed(x)[0]  # (N, D)
        n, p = tokens.shape[0], parts.layout.num_prefix_tokens
        full = parts.head_from_tokens(tokens[None])[0]
        _logit(full[None], target)
        bs = batch_size or occlusion_batch(parts, n, tokens.shape[1])
        out = torch.empty(n - p, dtype=torch.float32)
        every = torch.arange(n, device=tokens.device)
        for start in range(0, n - p, bs):
            _check(cancel)
            drop = torch.arange(p + start, min(n, p + start + bs), device=tokens.device)
            keep = every[None, :].expand(len(drop), n)
            keep = keep[keep != drop[:, None]].view(len(drop), n - 1)  # each row: every token but one
            logits = parts.head_from_tokens(tokens[keep])
            out[start : start + len(drop)] = (full[target] - logits[:, target]).float().cpu()
    return out
