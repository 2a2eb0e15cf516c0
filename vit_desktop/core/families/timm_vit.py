"""timm's ``VisionTransformer`` (and DeiT's distilled one) as :class:`..tokenvit.TokenViT`, with
timm's logits: state dicts, timm's hub folders (:mod:`.timm_folder`) and the catalog's DeiT
weights.

A state dict is recognised by ``patch_embed.proj.weight`` with ``blocks.0.…`` (the minimal ViT's
``transformer.…``/``mlp_head`` names are not timm's).  The network is read from the tensors:

* width, patch size (square only), depth, MLP width (``mlp.fc1``), classes (``head``, and
  ``head_dist`` for a distilled DeiT: the two heads averaged, as timm's evaluation does);
* prefix tokens: ``cls_token``, ``dist_token``, ``reg_token`` (registers), counted before the
  patch grid is read from ``pos_embed``; the grid is square (or given by ``img_size``) and the
  position embeddings cover the prefix tokens or not (timm's ``no_embed_class``);
* switches: ``qkv`` bias, ``q_norm``/``k_norm``, layer scale (``ls1.gamma``), ``norm_pre``,
  patch-embedding bias, final ``norm`` or ``fc_norm`` (timm's global average pooling).

Settings (a ``NAME.config.json`` sidecar, the file's metadata or a folder's ``model_args``):
``num_heads`` (else the count from ``q_norm``, else the standard one for the width),
``global_pool`` (``"token"`` or ``"avg"``; else "avg" with ``fc_norm`` or without a CLS token),
``class_token``, ``no_embed_class``, ``img_size``, ``act_layer`` (``"gelu"`` only).  What TokenViT cannot compute (attention
pooling, SwiGLU MLPs, extra norms) is refused in one line naming the tensor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import architectures as arch
from ..errors import CheckpointError, WeightsError
from ..preprocess import Preprocessing
from ..state_files import strip_prefixes
from ..tokenvit import TokenViT, TokenViTConfig
from . import timm_folder

if TYPE_CHECKING:
    from ..catalog import ModelEntry

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
#: Heads of timm's widths that are not one per 64 channels nor in :data:`.STANDARD_HEADS`.
TIMM_HEADS = {1152: 16, 1408: 16, 1664: 16}
#: What TokenViT cannot compute, by a part of the tensor name that shows it.
UNSUPPORTED = (
    ("attn_pool.", "attention pooling (timm's global_pool 'map')"),
    (".mlp.fc1_g.", "a SwiGLU MLP"),
    (".mlp.norm.", "a LayerNorm inside the MLP"),
    (".attn.norm.", "a LayerNorm after the attention"),
    ("patch_embed.norm.", "a LayerNorm after the patch embedding"),
    ("relative_position_bias_table", "a relative position bias (BEiT)"),
)
#: timm's default preprocessing for its ViTs (``vision_transformer._cfg``): bicubic, crop_pct
#: 0.9, mean and standard deviation 0.5.
DEFAULT_CROP_PCT = 0.9
DEFAULT_STATS = (0.5, 0.5, 0.5)


def recognise(state: Mapping[str, torch.Tensor]) -> bool:
    """``patch_embed.proj.weight`` and ``blocks.0.…``, without the minimal ViT's names."""
    return (
        "patch_embed.proj.weight" in state
        and any(k.startswith("blocks.0.") for k in state)
        and not any(k.startswith(("transformer.", "mlp_head.")) for k in state)
    )


def build(state: arch.StateDict, config: Mapping[str, Any], name: str) -> arch.Built:
    """A :class:`TokenViT` computing what timm's model of ``state`` computes."""
    cfg = infer_config(state, config, name)
    check_tensors(cfg, state, name)
    return arch.build_token_vit(cfg, state, name)


def infer_config(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], name: str) -> TokenViTConfig:
    """The :class:`TokenViTConfig` that ``state``'s names and shapes (and ``config``) describe."""
    for part, what in UNSUPPORTED:
        key = next((k for k in sorted(state) if part in f".{k}"), None)
        if key is not None:
            raise CheckpointError(f"{name}: {key} is {what}, which this app cannot compute")
    proj = arch.tensor_of_rank(state, "patch_embed.proj.weight", 4, name)
    width, chans, ph, pw = (int(v) for v in proj.shape)
    if ph != pw:
        raise CheckpointError(
            f"{name}: patch_embed.proj.weight has {ph}×{pw} patches; only square patches are supported"
        )
    if chans != 3:
        raise CheckpointError(
            f"{name}: patch_embed.proj.weight takes {chans}-channel images; the app gives RGB"
        )
    depth = 1 + max((int(m.group(1)) for k in state if (m := _BLOCK.match(k))), default=-1)
    if depth == 0:
        raise CheckpointError(f"{name}: has no blocks.N encoder blocks")
    fc1 = _tensor(state, "blocks.0.mlp.fc1.weight", 2, name)
    fc2 = state.get("blocks.0.mlp.fc2.weight")
    if fc2 is not None and fc2.ndim == 2 and fc1.shape[0] == 2 * fc2.shape[1]:
        raise CheckpointError(
            f"{name}: blocks.0.mlp.fc1.weight is {fc1.shape[0]} wide, twice what mlp.fc2 takes: a gated "
            "(SwiGLU) MLP, which this app cannot compute"
        )
    act = config.get("act_layer")
    if act not in (None, "gelu"):
        raise CheckpointError(f"{name}: act_layer {act!r:.40} is not supported (the exact GELU only)")
    head = state.get("head.weight")
    if head is None or head.ndim != 2 or head.shape[0] == 0:
        raise CheckpointError(
            f"{name}: has no classification head (head.weight): a feature extractor, not a classifier"
        )
    classes = int(head.shape[0])
    arch.require_positive(name, width=width, patch_size=ph, mlp_width=int(fc1.shape[0]))
    cls, dist = "cls_token" in state, "dist_token" in state
    registers = int(_tensor(state, "reg_token", 3, name).shape[1]) if "reg_token" in state else 0
    if dist and registers:
        raise CheckpointError(f"{name}: reg_token with dist_token is not a layout timm builds")
    if arch.config_flag(config, "class_token", cls, name) != cls:
        held = "holds a cls_token" if cls else "holds no cls_token"
        raise CheckpointError(f"{name}: its config says class_token is {not cls}, but the file {held}")
    pool = _pool(config, cls, "fc_norm.weight" in state, name)
    prefix = int(cls) + int(dist) + registers
    pos = _tensor(state, "pos_embed", 3, name)
    if pos.shape[0] != 1 or pos.shape[2] != width:
        raise CheckpointError(
            f"{name}: pos_embed has shape {tuple(pos.shape)}, expected (1, positions, {width})"
        )
    grid, pos_prefix = _grid(int(pos.shape[1]), prefix, ph, config, name)
    try:
        return TokenViTConfig(
            grid=grid, patch_size=ph, width=width, depth=depth, heads=_heads(state, width, config, name),
            mlp_dim=int(fc1.shape[0]), num_classes=classes, patch_bias="patch_embed.proj.bias" in state,
            cls_token=cls, dist_token=dist, registers=registers, pos_prefix=pos_prefix,
            pre_norm="norm_pre.weight" in state, qkv_bias="blocks.0.attn.qkv.bias" in state,
            qk_norm="blocks.0.attn.q_norm.weight" in state, proj_bias="blocks.0.attn.proj.bias" in state,
            layer_scale="blocks.0.ls1.gamma" in state, final_norm="norm.weight" in state, pool=pool,
            fc_norm="fc_norm.weight" in state, head_bias="head.bias" in state,
            dist_head="head_dist.weight" in state, eps=1e-6,
        )  # fmt: skip
    except ValueError as exc:
        raise CheckpointError(f"{name}: {exc}") from None


def _tensor(state: Mapping[str, torch.Tensor], key: str, ndim: int, name: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{name}: missing {key}")
    return arch.tensor_of_rank(state, key, ndim, name)


def _pool(config: Mapping[str, Any], cls: bool, fc_norm: bool, name: str) -> str:
    """timm's ``global_pool``: the config's, else "avg" with ``fc_norm`` or without a CLS token."""
    pool = config.get("global_pool")
    if pool is None:
        return "avg" if fc_norm or not cls else "token"
    if pool == "map":
        raise CheckpointError(
            f"{name}: global_pool 'map' is attention pooling, which this app cannot compute"
        )
    if pool not in ("token", "avg"):
        raise CheckpointError(f"{name}: global_pool {pool!r:.40} is not supported (token or avg)")
    if pool == "token" and not cls:
        raise CheckpointError(f"{name}: global_pool 'token' needs a cls_token, which the file does not hold")
    return pool


def _grid(
    n: int, prefix: int, patch: int, config: Mapping[str, Any], name: str
) -> tuple[tuple[int, int], bool]:
    """The patch grid of ``n`` position embeddings after ``prefix`` tokens, and whether they
    cover the prefix tokens (not: timm's ``no_embed_class``)."""
    no_embed = config.get("no_embed_class")
    if no_embed is not None:
        no_embed = arch.config_flag(config, "no_embed_class", False, name)
    covered = n - prefix if no_embed is not True else None  # patch positions if the prefix is covered
    size = config.get("img_size")
    if size is not None:
        pair = isinstance(size, list) and len(size) == 2
        h, w = (size, size) if isinstance(size, int) else (size[0], size[1]) if pair else (0, 0)
        if not all(type(v) is int and v > 0 and v % patch == 0 for v in (h, w)):
            raise CheckpointError(
                f"{name}: img_size {size!r:.40} is not a whole number of {patch}-px patches"
            )
        rows, cols = h // patch, w // patch
        if covered == rows * cols or (prefix == 0 and n == rows * cols):
            return (rows, cols), True
        if no_embed is not False and n == rows * cols:
            return (rows, cols), False
        raise CheckpointError(
            f"{name}: pos_embed holds {n} positions, not the {rows * cols} patches of a {w}×{h} input "
            f"(with or without its {prefix} prefix tokens)"
        )
    if covered is not None and covered > 0 and math.isqrt(covered) ** 2 == covered:
        return (math.isqrt(covered),) * 2, True
    if no_embed is not False and prefix and n > 0 and math.isqrt(n) ** 2 == n:
        return (math.isqrt(n),) * 2, False
    raise CheckpointError(
        f"{name}: pos_embed holds {n} positions: after its {prefix} prefix token(s), {n - prefix} do not form "
        "a square patch grid (give img_size in a NAME.config.json for a non-square one)"
    )


def _heads(state: Mapping[str, torch.Tensor], width: int, config: Mapping[str, Any], name: str) -> int:
    """``num_heads`` from the config; else from the per-head ``q_norm`` width; else timm's
    count for the width."""
    q_norm = state.get("blocks.0.attn.q_norm.weight")
    from_norm = (
        width // int(q_norm.shape[0]) if q_norm is not None and q_norm.ndim == 1 and q_norm.shape[0] else None
    )
    settings = dict(config)
    if "num_heads" not in settings and (from_norm or width in TIMM_HEADS):
        settings["num_heads"] = from_norm or TIMM_HEADS[width]
    heads = arch.heads_for(width, settings, name)
    if q_norm is not None and q_norm.shape[0] * heads != width:
        raise CheckpointError(
            f"{name}: blocks.0.attn.q_norm.weight is {q_norm.shape[0]} wide, not the head width of "
            f"{heads} heads over {width} channels"
        )
    return heads


def expected_shapes(cfg: TokenViTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of ``cfg``'s network (timm's names) with its shape, without building it."""
    d, p, hd, inner = cfg.width, cfg.patch_size, cfg.inner_dim // cfg.heads, cfg.inner_dim
    out: dict[str, tuple[int, ...]] = {"patch_embed.proj.weight": (d, cfg.in_chans, p, p)}

    def add(key: str, shape: tuple[int, ...], on: bool = True, bias: bool | None = None) -> None:
        if on:
            out[f"{key}.weight" if bias is not None else key] = shape
            if bias:
                out[f"{key}.bias"] = shape[:1]

    add("patch_embed.proj.bias", (d,), cfg.patch_bias)
    add("cls_token", (1, 1, d), cfg.cls_token)
    add("dist_token", (1, 1, d), cfg.dist_token)
    add("reg_token", (1, cfg.registers, d), cfg.registers > 0)
    add("pos_embed", (1, math.prod(cfg.grid) + (cfg.num_prefix_tokens if cfg.pos_prefix else 0), d))
    add("norm_pre", (d,), cfg.pre_norm, True)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        add(b + "norm1", (d,), True, True)
        add(b + "attn.qkv", (3 * inner, d), True, cfg.qkv_bias)
        add(b + "attn.q_norm", (hd,), cfg.qk_norm, True)
        add(b + "attn.k_norm", (hd,), cfg.qk_norm, True)
        add(b + "attn.proj", (d, inner), True, cfg.proj_bias)
        add(b + "ls1.gamma", (d,), cfg.layer_scale)
        add(b + "norm2", (d,), True, True)
        add(b + "mlp.fc1", (cfg.mlp_dim, d), True, True)
        add(b + "mlp.fc2", (d, cfg.mlp_dim), True, True)
        add(b + "ls2.gamma", (d,), cfg.layer_scale)
    add("norm", (d,), cfg.final_norm, True)
    add("fc_norm", (d,), cfg.fc_norm, True)
    add("head", (cfg.num_classes, d), True, cfg.head_bias)
    add("head_dist", (cfg.num_classes, d), cfg.dist_head, cfg.head_bias)
    return out


def check_tensors(cfg: TokenViTConfig, state: Mapping[str, torch.Tensor], name: str) -> None:
    """Refuse, naming the first tensor, a file that lacks a tensor of ``cfg``'s network, holds
    one of another shape, or holds one the network does not have."""
    want = expected_shapes(cfg)
    missing = next((k for k in want if k not in state), None)
    if missing is not None:
        raise CheckpointError(
            f"{name}: missing {missing} (a timm VisionTransformer of {cfg.depth} blocks has it)"
        )
    wrong = next((k for k, s in want.items() if tuple(state[k].shape) != s), None)
    if wrong is not None:
        raise CheckpointError(
            f"{name}: {wrong} has shape {tuple(state[wrong].shape)}, expected {want[wrong]}"
        )
    extra = next((k for k in sorted(state) if k not in want), None)
    if extra is not None:
        raise CheckpointError(
            f"{name}: holds {extra}, which a timm VisionTransformer of this layout does not have"
        )


# -- folders -----------------------------------------------------------------------------------


def recognise_folder(path: Path) -> bool:
    """timm's hub folder: ``config.json`` with ``architecture`` and ``pretrained_cfg``, and weights."""
    return timm_folder.recognise_folder(path)


def load_folder(path: Path, name: str) -> arch.FolderModel:
    """A timm hub folder's tensors, settings, labels and preprocessing (:mod:`.timm_folder`)."""
    state, cfg, settings = timm_folder.read_folder(path, name)
    if not recognise(state):
        raise CheckpointError(
            f"{name}: a timm {cfg['architecture']!r:.60} model, not a Vision Transformer this app knows "
            "(expected patch_embed.proj.weight and blocks.N)"
        )
    return timm_folder.folder_model(state, cfg, settings, name)


def default_preprocessing(input_size: tuple[int, int], patch_size: int) -> Preprocessing:
    """timm's default for its ViTs: the shorter side to floor(size / 0.9), bicubic, centre
    crop, mean and standard deviation 0.5."""
    h, w = input_size
    return Preprocessing(
        input_size=(h, w), patch_size=patch_size, mean=DEFAULT_STATS, std=DEFAULT_STATS, mode="resize_crop",
        resize_size=math.floor(min(h, w) / DEFAULT_CROP_PCT), interpolation="bicubic",
    )  # fmt: skip


# -- catalog entries ---------------------------------------------------------------------------

_DEIT = re.compile(r"^deit_(tiny|small|base)(_distilled)?_patch(\d+)_(\d+)$")
#: DeiT's sizes: width and heads (12 blocks, MLP 4× the width).
DEIT_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


def entry_config(entry: ModelEntry) -> TokenViTConfig:
    """The network of a ``"timm:deit_…"`` catalog entry at the entry's size and class count."""
    builder = entry.architecture.split(":", 1)[-1]
    m = _DEIT.match(builder)
    if m is None:
        raise WeightsError(
            f"{entry.display_name}: {entry.architecture!r} is not a timm model this app builds"
        )
    width, heads = DEIT_SIZES[m.group(1)]
    distilled = m.group(2) is not None
    return TokenViTConfig(
        grid=entry.patch_grid, patch_size=entry.patch_size, width=width, depth=12, heads=heads, mlp_dim=4 * width,
        num_classes=entry.num_classes, dist_token=distilled, dist_head=distilled,
    )  # fmt: skip


def build_entry(entry: ModelEntry, state: arch.StateDict | None) -> nn.Module:
    """A catalog entry's DeiT with its weights (timm's names, checked strictly), or with random
    weights (a random head, so the logits differ) when ``state`` is None."""
    cfg = entry_config(entry)
    if state is not None:
        state = strip_prefixes(state)
        try:
            check_tensors(cfg, state, entry.filename or entry.id)
        except CheckpointError as exc:
            raise WeightsError(f"{entry.display_name}: the weights do not fit the model ({exc})") from None
    module = TokenViT(cfg)
    if state is not None:
        arch.load_exactly(module, state, entry.filename or entry.id)
    return module


FAMILY = arch.register_module(
    globals(),
    "timm",
    "timm",
    "patch_embed.proj.weight, pos_embed and blocks.N",
    **arch.TOKEN_VIT_HOOKS,
)
