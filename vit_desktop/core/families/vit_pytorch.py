"""vit-pytorch's ``ViT`` (the current layout and the 0.x one still in many checkpoints) and
``SimpleViT``, as :class:`..tokenvit.TokenViT` with the same logits.

A state dict is recognised by ``to_patch_embedding.`` and ``transformer.layers.`` keys.  The
pieces are read from the names and shapes:

* the patch embedding: ``to_patch_embedding.{1: LayerNorm, 2: Linear, 3: LayerNorm}``, or the
  0.x ``to_patch_embedding.1`` Linear alone;
* the blocks: attention with its own ``norm`` (``transformer.layers.N.0.{norm,to_qkv,to_out.0}``,
  feed-forward ``N.1.net.{0: LayerNorm, 1, 4}``) and a final ``transformer.norm``, or the 0.x
  ``PreNorm`` wrappers (``N.0.norm`` + ``N.0.fn.…``, ``N.1.norm`` + ``N.1.fn.net.{0, 3}``);
  ``to_out`` is absent for one head as wide as the model;
* the tokens: a current ``cls_token`` (1, dim) — or (0, dim) for ``pool="mean"``, which then
  averages the patch tokens — and ``pos_embedding`` (N[+1], dim); the older (1, 1, dim) and
  (1, N+1, dim), whose ``pool="mean"`` averaged every token, the CLS token included;
* the head: ``mlp_head`` (Linear), the 0.x ``mlp_head.{0: LayerNorm, 1: Linear}``, or
  SimpleViT's ``linear_head`` (SimpleViT: no CLS token, fixed sine-cosine positions that are not
  in the file, the mean of the patch tokens).

What shapes cannot tell comes from the settings (a ``NAME.config.json`` sidecar): ``num_heads``
and/or ``dim_head`` (else vit-pytorch's default ``dim_head`` 64), ``pool`` for the older
layouts (``"cls"`` unless it says ``"mean"``), ``image_size`` for a SimpleViT (else its
``preprocessing``'s ``input_size``, else 224), ``channels`` (3).  vit-pytorch has no
preprocessing of its own: the default is the ImageNet one at the model's input size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .. import architectures as arch
from ..errors import CheckpointError
from ..preprocess import MAX_INPUT_SIDE
from ..tokenvit import TokenViTConfig

_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")
_L = "transformer.layers"
_SIDECAR = "a NAME.config.json next to the file"

#: One tensor of the file: its name there, its name in TokenViT, the shape it must have.
Entry = tuple[str, str, tuple[int, ...]]


def recognise(state: Mapping[str, torch.Tensor]) -> bool:
    """vit-pytorch names: ``to_patch_embedding.…`` and ``transformer.layers.N.…``."""
    return any(k.startswith("to_patch_embedding.") for k in state) and any(
        k.startswith("transformer.layers.") for k in state
    )


def build(state: arch.StateDict, config: Mapping[str, Any], name: str) -> arch.Built:
    """A :class:`TokenViT` computing what the vit-pytorch model of ``state`` computes."""
    simple = "linear_head.weight" in state and "pos_embedding" not in state and "cls_token" not in state
    prenorm = f"{_L}.0.0.fn.to_qkv.weight" in state
    kind = "SimpleViT" if simple else "ViT"
    patch_norms = "to_patch_embedding.2.weight" in state
    proj_w = _matrix(state, f"to_patch_embedding.{2 if patch_norms else 1}.weight", name)
    width, patch_dim = int(proj_w.shape[0]), int(proj_w.shape[1])
    channels = _whole(config, "channels", 3, name)
    if channels != 3:
        raise CheckpointError(
            f"{name}: the model takes {channels}-channel images; the app gives it RGB (3 channels)"
        )
    patch = math.isqrt(patch_dim // 3)
    if patch * patch * 3 != patch_dim:
        raise CheckpointError(
            f"{name}: to_patch_embedding takes {patch_dim} values per patch, not 3 × a square patch "
            "(non-square patches are not supported)"
        )
    attn0 = f"{_L}.0.0.fn" if prenorm else f"{_L}.0.0"
    qkv = _matrix(state, f"{attn0}.to_qkv.weight", name)
    if qkv.shape[0] % 3:
        raise CheckpointError(
            f"{name}: {attn0}.to_qkv.weight has {qkv.shape[0]} rows, not 3 × the attention width"
        )
    inner = int(qkv.shape[0]) // 3
    fc1 = f"{_L}.0.1.fn.net.0.weight" if prenorm else f"{_L}.0.1.net.1.weight"
    mlp_dim = int(_matrix(state, fc1, name).shape[0])
    head_key = "linear_head" if simple else "mlp_head.1" if "mlp_head.1.weight" in state else "mlp_head"
    classes = int(_matrix(state, f"{head_key}.weight", name).shape[0])
    arch.require_positive(name, width=width, patch_size=patch, attention_width=inner, mlp_width=mlp_dim,
                          classes=classes)  # fmt: skip
    depth = 1 + max((int(m.group(1)) for k in state if (m := _LAYER.match(k))), default=0)
    proj = simple or f"{attn0}.to_out.0.weight" in state
    heads = _heads(inner, width, None if proj else f"{attn0}.to_out.0.weight", config, name)
    if simple:
        rows, cols = _simple_grid(config, patch, width, name)
        tokens: list[Entry] = []
        cls, pool, pos = False, "avg", "sincos"
    else:
        rows, cols, cls, pool, tokens = _tokens(state, config, width, name)
        pos = "learned"
    cfg = TokenViTConfig(
        grid=(rows, cols), patch_size=patch, width=width, depth=depth, heads=heads, mlp_dim=mlp_dim,
        num_classes=classes, head_dim=inner // heads, patch_embed="linear", patch_norms=patch_norms,
        cls_token=cls, pos=pos, qkv_bias=False, proj=proj, proj_bias=not simple,
        final_norm=not prenorm or "transformer.norm.weight" in state, pool=pool,
        fc_norm=head_key == "mlp_head.1", eps=1e-5,
    )  # fmt: skip
    plan = [*tokens, *_patch_entries(cfg, patch_dim), *_head_entries(cfg, head_key)]
    for i in range(depth):
        plan += _block_entries(cfg, i, prenorm, simple)
    return arch.build_token_vit(cfg, _mapped(state, plan, f"{kind} of this shape", name), name)


def _matrix(state: Mapping[str, torch.Tensor], key: str, name: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{name}: missing {key} (a vit-pytorch model has it)")
    return arch.tensor_of_rank(state, key, 2, name)


def _whole(config: Mapping[str, Any], key: str, default: int | None, name: str) -> int | None:
    """``config[key]`` as a whole number from 1 to 65536 (or ``default`` when absent)."""
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
        raise CheckpointError(f"{name}: {key} must be a whole number from 1 to 65536, not {value!r:.40}")
    return value


def _heads(inner: int, width: int, no_proj: str | None, config: Mapping[str, Any], name: str) -> int:
    """Heads of an attention ``inner`` wide: from ``num_heads``/``dim_head`` in the config, else
    one per 64 channels (vit-pytorch's default ``dim_head``); one head when the file has no
    output projection (``no_proj`` names the missing tensor)."""
    heads, dim_head = _whole(config, "num_heads", None, name), _whole(config, "dim_head", None, name)
    if no_proj:
        if inner != width or heads not in (None, 1) or dim_head not in (None, width):
            raise CheckpointError(
                f"{name}: missing {no_proj} (vit-pytorch drops it only for one head as wide as the model)"
            )
        return 1
    if heads is None and dim_head is not None:
        heads = inner // dim_head if inner % dim_head == 0 else 0
    elif heads is None:
        if inner % 64:
            raise CheckpointError(
                f"{name}: cannot tell the attention heads of its {inner}-wide attention (not a multiple of "
                f'vit-pytorch\'s default dim_head 64); give {{"num_heads": N}} in {_SIDECAR}'
            )
        heads = inner // 64
    if not heads or inner % heads or (dim_head is not None and heads * dim_head != inner):
        given = ", ".join(f"{k} {config[k]}" for k in ("num_heads", "dim_head") if k in config)
        raise CheckpointError(f"{name}: its config's {given} do not fit its {inner}-wide attention (to_qkv)")
    return heads


def _tokens(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], width: int,
            name: str) -> tuple[int, int, bool, str, list[Entry]]:  # fmt: skip
    """Grid, CLS token, pooling and the token tensors of a ``ViT``: (N[+1], dim) positions and
    a (1 or 0, dim) CLS token (current), or (1, N+1, dim) and (1, 1, dim) (older layouts)."""
    if "pos_embedding" not in state:
        raise CheckpointError(f"{name}: missing pos_embedding (the position embeddings)")
    pos = state["pos_embedding"]
    given = config.get("pool")
    if given not in (None, "cls", "mean"):
        raise CheckpointError(f'{name}: pool must be "cls" or "mean", not {given!r:.40}')
    cls_shape = tuple(state["cls_token"].shape) if "cls_token" in state else None
    if pos.ndim == 2:  # current: no CLS token with pool "mean", which averages the patch tokens
        if cls_shape not in (None, (1, width), (0, width)):
            raise CheckpointError(
                f"{name}: cls_token has shape {cls_shape}, expected (1, {width}) or (0, {width})"
            )
        cls = cls_shape == (1, width)
        pool = "token" if cls else "avg"
        if given is not None and (given == "cls") != cls:
            have = "has a CLS token" if cls else "has no CLS token"
            raise CheckpointError(f'{name}: its config says pool "{given}", but the file {have} (cls_token)')
        shape: tuple[int, ...] = (int(pos.shape[0]), width)
    elif pos.ndim == 3:  # older: always a CLS token; pool "mean" averaged every token
        if cls_shape != (1, 1, width):
            raise CheckpointError(f"{name}: cls_token has shape {cls_shape}, expected (1, 1, {width})")
        cls, pool = True, "mean" if given == "mean" else "token"
        shape = (1, int(pos.shape[1]), width)
    else:
        raise CheckpointError(f"{name}: pos_embedding has {pos.ndim} dimensions, expected 2 or 3")
    if tuple(pos.shape) != shape:
        raise CheckpointError(f"{name}: pos_embedding has shape {tuple(pos.shape)}, expected {shape}")
    n = shape[-2] - int(cls)
    side = math.isqrt(max(n, 0))
    if n < 1 or side * side != n:
        raise CheckpointError(
            f"{name}: pos_embedding holds {n} patch positions, which do not form a square grid "
            + ("(is cls_token missing?)" if cls_shape is None else "(non-square images are not supported)")
        )
    plan: list[Entry] = [("pos_embedding", "pos_embed", shape)]
    if cls_shape is not None:
        plan.append(("cls_token", "cls_token" if cls else "", cls_shape))
    return side, side, cls, pool, plan


def _simple_grid(config: Mapping[str, Any], patch: int, width: int, name: str) -> tuple[int, int]:
    """A SimpleViT's patch grid: ``image_size`` from the config, else its preprocessing's
    ``input_size``, else 224 (the file does not say: its positions are computed)."""
    size = config.get("image_size")
    if size is None:
        pre = config.get("preprocessing")
        size = pre.get("input_size") if isinstance(pre, dict) else None
        size = size if _size_pair(size) else 224
    pair = _size_pair(size)
    if pair is None:
        raise CheckpointError(
            f"{name}: image_size must be a whole number or [height, width], not {size!r:.40}"
        )
    for side in pair:
        if not patch <= side <= MAX_INPUT_SIDE or side % patch:
            raise CheckpointError(
                f"{name}: image_size {side} is not a multiple of its {patch}-px patches up to {MAX_INPUT_SIDE} px"
            )
    if width % 4:
        raise CheckpointError(f"{name}: a width of {width} cannot take SimpleViT's sine-cosine positions")
    return pair[0] // patch, pair[1] // patch


def _size_pair(size: object) -> tuple[int, int] | None:
    whole = [v for v in (size if isinstance(size, list) else [size, size])
             if isinstance(v, int) and not isinstance(v, bool)]  # fmt: skip
    return (whole[0], whole[1]) if len(whole) == 2 else None


def _linear(src: str, dst: str, out: int, inp: int, bias: bool = True) -> Iterator[Entry]:
    yield f"{src}.weight", f"{dst}.weight", (out, inp)
    if bias:
        yield f"{src}.bias", f"{dst}.bias", (out,)


def _norm(src: str, dst: str, n: int) -> Iterator[Entry]:
    yield f"{src}.weight", f"{dst}.weight", (n,)
    yield f"{src}.bias", f"{dst}.bias", (n,)


def _patch_entries(cfg: TokenViTConfig, patch_dim: int) -> list[Entry]:
    if not cfg.patch_norms:
        return [*_linear("to_patch_embedding.1", "patch_embed.proj", cfg.width, patch_dim)]
    return [
        *_norm("to_patch_embedding.1", "patch_embed.norm_in", patch_dim),
        *_linear("to_patch_embedding.2", "patch_embed.proj", cfg.width, patch_dim),
        *_norm("to_patch_embedding.3", "patch_embed.norm", cfg.width),
    ]


def _head_entries(cfg: TokenViTConfig, head_key: str) -> list[Entry]:
    d = cfg.width
    plan = [*_linear(head_key, "head", cfg.num_classes, d)]
    if cfg.fc_norm:
        plan += _norm("mlp_head.0", "fc_norm", d)
    if cfg.final_norm:
        plan += _norm("transformer.norm", "norm", d)
    return plan


def _block_entries(cfg: TokenViTConfig, i: int, prenorm: bool, simple: bool) -> list[Entry]:
    d, inner, a, f, b = cfg.width, cfg.inner_dim, f"{_L}.{i}.0", f"{_L}.{i}.1", f"blocks.{i}"
    attn, ff = (f"{a}.fn", f"{f}.fn.net") if prenorm else (a, f"{f}.net")
    plan = [
        *_norm(f"{a}.norm", f"{b}.norm1", d),
        *_linear(f"{attn}.to_qkv", f"{b}.attn.qkv", 3 * inner, d, False),
    ]
    if simple:
        plan += _linear(f"{attn}.to_out", f"{b}.attn.proj", d, inner, bias=False)
    elif cfg.proj:
        plan += _linear(f"{attn}.to_out.0", f"{b}.attn.proj", d, inner)
    if prenorm:
        fc1, fc2 = 0, 3
        plan += _norm(f"{f}.norm", f"{b}.norm2", d)
    else:
        fc1, fc2 = 1, 3 if simple else 4
        plan += _norm(f"{ff}.0", f"{b}.norm2", d)
    return [*plan, *_linear(f"{ff}.{fc1}", f"{b}.mlp.fc1", cfg.mlp_dim, d),
            *_linear(f"{ff}.{fc2}", f"{b}.mlp.fc2", d, cfg.mlp_dim)]  # fmt: skip


def _mapped(state: Mapping[str, torch.Tensor], plan: list[Entry], what: str, name: str) -> arch.StateDict:
    """``state`` in TokenViT's names; a missing, wrongly shaped or unexpected tensor is refused
    by its name in the file."""
    out: arch.StateDict = {}
    for src, dst, shape in plan:
        t = state.get(src)
        if t is None:
            raise CheckpointError(f"{name}: missing {src} (a vit-pytorch {what} has it)")
        if tuple(t.shape) != shape:
            raise CheckpointError(f"{name}: {src} has shape {tuple(t.shape)}, expected {shape}")
        if dst == "pos_embed":
            t = t.reshape(1, -1, t.shape[-1])
        elif dst == "cls_token":
            t = t.reshape(1, 1, -1)
        if dst:
            out[dst] = t
    used = {src for src, _, _ in plan}
    extra = sorted(k for k in state if k not in used)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{name}: holds {extra[0]}{more}, which a vit-pytorch {what} does not have")
    return out


FAMILY = arch.register_module(
    globals(),
    "vit-pytorch",
    "vit-pytorch",
    "to_patch_embedding and transformer.layers.N",
    **arch.TOKEN_VIT_HOOKS,
)
