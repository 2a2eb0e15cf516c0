"""The article-style minimal ViT (:mod:`vit_desktop.core.minivit`), our demo model included.

A state dict is recognised by ``patch_embed.proj.weight`` together with the tutorial's
``transformer.…`` encoder or ``mlp_head`` (timm also has ``patch_embed.proj`` but neither of
those).  Width, depth, MLP width, the convolutional stem's channels, grid and classes come
from the tensor shapes; what shapes cannot tell (heads, pre- or post-norm, stem strides,
per-image input normalisation) from the config.  The catalog's ``"minivit"`` architecture is
the shipped ``demo-shapes`` model, whose configuration is :data:`.demo.model.CONFIG`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import architectures as arch
from ..errors import CheckpointError, WeightsError
from ..minivit import MiniViT, MiniViTConfig

if TYPE_CHECKING:
    from ..catalog import ModelEntry

_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")
_STEM_CONV = re.compile(r"^patch_embed\.stem\.(\d+)\.weight$")


def recognise(state: Mapping[str, torch.Tensor]) -> bool:
    """``patch_embed.proj.weight`` and the tutorial's ``transformer.``/``mlp_head`` names."""
    return "patch_embed.proj.weight" in state and any(
        k.startswith(("transformer.", "mlp_head.")) for k in state
    )


def build(state: arch.StateDict, config: Mapping[str, Any], name: str) -> arch.Built:
    """A :class:`MiniViT` shaped by ``state``'s tensors and ``config``, with ``state`` loaded exactly."""
    proj = arch.tensor_of_rank(state, "patch_embed.proj.weight", 4, name)
    width, k = int(proj.shape[0]), int(proj.shape[-1])
    arch.require_positive(name, width=width, patch_size=k)
    stem_idx = sorted(
        int(m.group(1)) for key in state if (m := _STEM_CONV.match(key)) and state[key].ndim == 4
    )
    stem = tuple(int(state[f"patch_embed.stem.{i}.weight"].shape[0]) for i in stem_idx)
    strides = _stem_strides(config, name) or (2,) * len(stem)
    if len(strides) != len(stem):
        raise CheckpointError(
            f"{name}: its config gives {len(strides)} stem strides for {len(stem)} stem convolutions"
        )
    patch = k * math.prod(strides)
    if "pos_embed" not in state or "cls_token" not in state:
        raise CheckpointError(f"{name}: missing cls_token or pos_embed")
    pos = arch.tensor_of_rank(state, "pos_embed", 3, name)
    grid = arch.square_grid(int(pos.shape[1]) - 1, name)
    layers = [int(m.group(1)) for key in state if (m := _LAYER.match(key))]
    if not layers:
        raise CheckpointError(f"{name}: has no transformer.layers.N encoder blocks")
    if "mlp_head.weight" in state:
        head_w, head_norm = state["mlp_head.weight"], False
    elif "mlp_head.1.weight" in state:
        head_w, head_norm = state["mlp_head.1.weight"], True
    else:
        raise CheckpointError(f"{name}: missing mlp_head.weight (the classification head)")
    arch.require_positive(name, classes=int(head_w.shape[0]), stem_strides=min(strides, default=1))
    linear1 = state.get("transformer.layers.0.linear1.weight")
    classes, depth = int(head_w.shape[0]), 1 + max(layers)
    mlp_dim = int(linear1.shape[0]) if linear1 is not None else 4 * width
    # The weight matrices alone (biases and norms add a little): checked before allocating.
    chans = (3, *stem)
    matrices = (sum(9 * a * b for a, b in zip(chans, chans[1:])) + chans[-1] * k * k * width
                + (grid * grid + 2) * width + depth * (4 * width + 2 * mlp_dim) * width + classes * width)  # fmt: skip
    arch.require_fits(name, matrices, state)
    cfg = MiniViTConfig(
        image_size=grid * patch,
        patch_size=patch,
        num_classes=classes,
        embed_dim=width,
        depth=depth,
        num_heads=arch.heads_for(width, config, name),
        mlp_dim=mlp_dim,
        # The tutorial's nn.TransformerEncoderLayer is post-norm unless told otherwise.
        norm_first=arch.config_flag(config, "norm_first", False, name),
        final_norm="transformer.norm.weight" in state,
        head_norm=head_norm,
        stem_channels=stem,
        stem_strides=strides if config.get("stem_strides") else (),
        input_norm=arch.config_flag(config, "input_norm", False, name),
        layer_norm_eps=arch.config_number(config, "layer_norm_eps", 1e-5, 1e-12, 1.0, name),
    )
    try:
        model = MiniViT(cfg)
    except ValueError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    arch.load_exactly(model, state, name)
    return arch.Built(model, (cfg.image_size, cfg.image_size), patch)


def _stem_strides(config: Mapping[str, Any], name: str) -> tuple[int, ...]:
    """``stem_strides`` from the config: a list of whole numbers from 1 to 16 (or none)."""
    value = config.get("stem_strides", [])
    if not (isinstance(value, list) and all(type(v) is int and 1 <= v <= 16 for v in value)):
        raise CheckpointError(
            f"{name}: stem_strides must be a list of whole numbers from 1 to 16, not {value!r:.40}"
        )
    return tuple(value)


def num_classes(module: nn.Module) -> int:
    """The class count of the model's configuration."""
    return module.config.num_classes


def owns_module(module: nn.Module) -> bool:
    """True for a :class:`MiniViT`."""
    return isinstance(module, MiniViT)


def build_entry(entry: ModelEntry, state: arch.StateDict | None) -> nn.Module:
    """The demo model (:data:`.demo.model.CONFIG`) with ``state`` loaded exactly, or with its
    random initialisation when ``state`` is None."""
    from ..demo.model import CONFIG

    model = MiniViT(CONFIG)
    if state is not None:
        try:
            arch.load_exactly(model, state, entry.filename or entry.id)
        except CheckpointError as exc:
            raise WeightsError(f"{entry.display_name}: the weights do not fit the model ({exc})") from None
    return model


# -- the forward pass in three parts (class-specific maps, :mod:`..explain`) --------------------


def embed_tokens(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tokens before the first block (:meth:`MiniViT.embed`)."""
    return module.embed(x)


def encoder_blocks(module: nn.Module) -> list[nn.Module]:
    """The encoder layers, in forward order."""
    return list(module.transformer.layers)


def classify_tokens(module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The logits from the last layer's output (:meth:`MiniViT.classify_tokens`)."""
    return module.classify_tokens(tokens)


def gradcam_layer(module: nn.Module, index: int) -> nn.Module:
    """Layer ``index``'s ``norm1``."""
    return module.transformer.layers[index].norm1


FAMILY = arch.register_module(
    globals(),
    "minivit",
    "minimal ViT",
    "patch_embed.proj.weight, cls_token, pos_embed and transformer.layers.N",
)
