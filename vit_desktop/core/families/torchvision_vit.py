"""torchvision's ``VisionTransformer``: checkpoints of any size and the catalog's published weights.

A state dict is recognised by ``conv_proj.weight`` and ``class_token``; patch size, width,
depth, MLP width, image size and classes come from the tensor shapes, the head count from
the config or the width's standard value.  A catalog entry ``"torchvision:BUILDER"`` is built
with torchvision's ``BUILDER`` at the entry's input size (the entries themselves are read
from torchvision's weight enums by :mod:`..catalog`).

torchvision is imported only when a model of this family is built or listed: the start-up
demo model must not pay for it.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..architectures import (
    Built,
    StateDict,
    heads_for,
    register_module,
    require_fits,
    require_positive,
    square_grid,
    tensor_of_rank,
)
from ..errors import CheckpointError, WeightsError
from ..text import brief
from ..tokenvit import resample_positions

if TYPE_CHECKING:
    from ..catalog import ModelEntry

_LAYER = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.")


def recognise(state: Mapping[str, torch.Tensor]) -> bool:
    """A torchvision ViT state dict has a ``conv_proj`` patch projection and a ``class_token``."""
    return "conv_proj.weight" in state and "class_token" in state


def build(state: StateDict, config: Mapping[str, Any], name: str) -> Built:
    """A ``VisionTransformer`` shaped by ``state``'s tensors, with ``state`` loaded."""
    from torchvision.models.vision_transformer import VisionTransformer

    w = tensor_of_rank(state, "conv_proj.weight", 4, name)
    width, patch = int(w.shape[0]), int(w.shape[-1])
    require_positive(name, width=width, patch_size=patch)
    depth = 1 + max((int(m.group(1)) for k in state if (m := _LAYER.match(k))), default=-1)
    if depth == 0:
        raise CheckpointError(f"{name}: has no encoder.layers.encoder_layer_N blocks")
    mlp_key = "encoder.layers.encoder_layer_0.mlp.0.weight"
    if mlp_key not in state:
        mlp_key = "encoder.layers.encoder_layer_0.mlp.linear_1.weight"
    if mlp_key not in state:
        raise CheckpointError(f"{name}: missing the first MLP weight of encoder layer 0")
    mlp_dim = int(state[mlp_key].shape[0])
    if "encoder.pos_embedding" not in state:
        raise CheckpointError(f"{name}: missing encoder.pos_embedding")
    pos = tensor_of_rank(state, "encoder.pos_embedding", 3, name)
    grid = square_grid(int(pos.shape[1]) - 1, name)
    image_size = grid * patch
    head = state.get("heads.head.weight")
    if head is None:
        raise CheckpointError(f"{name}: missing heads.head.weight (the classification head)")
    rep = state.get("heads.pre_logits.weight")
    require_positive(name, classes=int(head.shape[0]), mlp_width=mlp_dim,
                     representation_size=int(rep.shape[0]) if rep is not None else 1)  # fmt: skip
    classes, rep_size = int(head.shape[0]), int(rep.shape[0]) if rep is not None else 0
    # The weight matrices alone (biases and norms add a little): checked before allocating.
    matrices = (3 * patch * patch * width + (grid * grid + 1) * width + depth * (4 * width + 2 * mlp_dim) * width
                + (rep_size * width + rep_size * classes if rep_size else width * classes))  # fmt: skip
    require_fits(name, matrices, state)
    heads = heads_for(width, config, name)
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch,
        num_layers=depth,
        num_heads=heads,
        hidden_dim=width,
        mlp_dim=mlp_dim,
        num_classes=classes,
        representation_size=rep_size or None,
    )
    # torchvision renames old "mlp.linear_1" keys itself in _load_from_state_dict.
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{name}: does not fit a VisionTransformer ({brief(str(exc))})") from None
    if missing or unexpected:
        bits = []
        if missing:
            bits.append("missing " + ", ".join(missing[:4]))
        if unexpected:
            bits.append("unexpected " + ", ".join(unexpected[:4]))
        raise CheckpointError(f"{name}: does not fit a VisionTransformer: " + "; ".join(bits))
    return Built(model, (image_size, image_size), patch)


def num_classes(module: nn.Module) -> int:
    """The output width of the classification head ``heads.head``."""
    return int(module.heads.head.out_features)


def owns_module(module: nn.Module) -> bool:
    """True for a torchvision ``VisionTransformer`` (without importing torchvision: if it is
    not imported yet, no module can be one)."""
    vt = sys.modules.get("torchvision.models.vision_transformer")
    return vt is not None and isinstance(module, vt.VisionTransformer)


def resize(module: nn.Module, grid: tuple[int, int]) -> None:
    """Run on a square ``grid`` of patches: the position embeddings resampled
    (:func:`..tokenvit.resample_positions`); torchvision's ViT takes square inputs only."""
    rows, cols = grid
    if rows != cols:
        raise ValueError("torchvision's ViT takes square inputs only")
    trained = getattr(module, "trained_positions", None)  # resampled from these, so going back is exact
    if trained is None:
        trained = module.encoder.pos_embedding.detach().clone()
        module.trained_positions = trained
    old = math.isqrt(int(trained.shape[1]) - 1)
    with torch.no_grad():
        new = resample_positions(trained, (old, old), (rows, cols), 1).to(module.encoder.pos_embedding.device)
    module.encoder.pos_embedding = nn.Parameter(new)
    module.image_size = rows * module.patch_size
    module.seq_length = rows * cols + 1


def reinit_head(module: nn.Module) -> None:
    """Give the head small random weights: torchvision initialises it to zeros, which makes
    every logit 0 (and every "same outputs" comparison pass for nothing)."""
    head = getattr(getattr(module, "heads", None), "head", None)
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)


def build_entry(entry: ModelEntry, state: StateDict | None) -> nn.Module:
    """The torchvision builder named by ``entry.architecture`` (``"torchvision:vit_b_16"``) at
    the entry's input size and class count, with ``state`` loaded strictly, or with random
    weights and a re-initialised head when ``state`` is None."""
    from torchvision import models

    builder = entry.architecture.split(":", 1)[1]
    h, _ = entry.input_size
    module = getattr(models, builder)(weights=None, image_size=h, num_classes=entry.num_classes)
    if state is None:
        reinit_head(module)
        return module
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{entry.display_name}: the weights do not fit the model ({exc})") from None
    return module


# -- the forward pass in three parts (class-specific maps, :mod:`..explain`) --------------------


def embed_tokens(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``VisionTransformer.forward`` and ``Encoder.forward`` do before the first block:
    patches embedded, the class token in front, position embeddings added, dropout."""
    x = module._process_input(x)
    x = torch.cat([module.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    return module.encoder.dropout(x + module.encoder.pos_embedding)


def encoder_blocks(module: nn.Module) -> list[nn.Module]:
    """The encoder's ``EncoderBlock``s, in forward order."""
    return list(module.encoder.layers)


def classify_tokens(module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """What follows the last block: ``encoder.ln``, the class token, ``heads``."""
    return module.heads(module.encoder.ln(tokens)[:, 0])


def gradcam_layer(module: nn.Module, index: int) -> nn.Module:
    """Block ``index``'s first LayerNorm, ``ln_1``."""
    return module.encoder.layers[index].ln_1


FAMILY = register_module(globals(), "torchvision", "torchvision", "conv_proj.weight and class_token")
