"""Hugging Face ``transformers`` ViT and DeiT classifiers, as folders or single files.

A folder is what ``save_pretrained`` writes (and the Hub holds): ``config.json`` with
``model_type`` ``"vit"`` or ``"deit"``, the weights (``model.safetensors``, its shards, or
``pytorch_model.bin``) and, when present, ``preprocessor_config.json``
(:mod:`.hf_config` reads them).  A single weights file without its folder is recognised by
the names of its tensors (``vit.embeddings.…``, ``deit.embeddings.…``) and built from their
shapes; the head count comes from a ``NAME.config.json`` beside it (``num_heads``), else
the standard count for the width, and LayerNorm's epsilon is Hugging Face's 1e-12 unless
that file gives ``layer_norm_eps``.

The network is a :class:`..tokenvit.TokenViT` with the tensors renamed (the separate query,
key and value projections joined into one): ``ViTForImageClassification`` classifies from
the CLS token; ``DeiTForImageClassification`` too, with the distillation token in the
sequence; ``DeiTForImageClassificationWithTeacher`` averages its CLS and distillation heads,
as ``transformers`` does at inference.  Both the names ``save_pretrained`` writes
(``encoder.layer.N.attention.attention.query``) and the module names of recent
``transformers`` (``layers.N.attention.q_proj``) are read.  Only the exact GELU
(``hidden_act: "gelu"``) is supported.  ``transformers`` itself is never imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import architectures as arch
from ..errors import CheckpointError
from ..preprocess import Preprocessing
from ..tokenvit import TokenViT, TokenViTConfig
from . import hf_config

_PREFIXES = ("vit.", "deit.", "")
_PATCH = "embeddings.patch_embeddings.projection.weight"
#: Per-layer tensors: TokenViT's name → (names saved by save_pretrained, names of recent transformers).
_LAYER_NAMES = {
    "norm1": ("layernorm_before", "layernorm_before"),
    "attn.proj": ("attention.output.dense", "attention.o_proj"),
    "norm2": ("layernorm_after", "layernorm_after"),
    "mlp.fc1": ("intermediate.dense", "mlp.fc1"),
    "mlp.fc2": ("output.dense", "mlp.fc2"),
}
_QKV = (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
        ("attention.q_proj", "attention.k_proj", "attention.v_proj"))  # fmt: skip
#: Tensors a classifier does not use: ViTModel's pooler, the masked-image-modelling mask token.
_UNUSED = re.compile(r"^(vit\.|deit\.)?(pooler\.|embeddings\.mask_token$)")


def recognise(state: Mapping[str, torch.Tensor]) -> bool:
    """Hugging Face's names: ``vit.embeddings.…``/``deit.embeddings.…``, or a bare ``ViTModel``'s
    patch embedding with ``layernorm_before`` layers."""
    if any(k.startswith(("vit.embeddings.", "deit.embeddings.")) for k in state):
        return True
    return _PATCH in state and any(".layernorm_before." in k for k in state)


def recognise_folder(path: Path) -> bool:
    """A folder with ``config.json`` of ``model_type`` vit or deit and a weights file."""
    return hf_config.model_type(path) is not None


def load_folder(path: Path, name: str) -> arch.FolderModel:
    """The tensors, settings, labels (``id2label``) and preprocessing of a Hugging Face folder."""
    config = hf_config.read_json(path / "config.json", name)
    settings = hf_config.settings(config)
    _check_act(settings, name)
    labels = hf_config.labels_of(config, name)
    deit = config.get("model_type") == "deit"
    image_size = hf_config.size_pair(config.get("image_size", 224), "config.json's image_size", name)
    patch = hf_config.size_pair(config.get("patch_size", 16), "config.json's patch_size", name)
    if patch[0] != patch[1]:
        raise CheckpointError(f"{name}: config.json's patch_size {list(patch)} is not square")
    pre_file = path / "preprocessor_config.json"
    if pre_file.exists():
        pre = hf_config.read_json(pre_file, name)
        preprocessing = hf_config.processor_preprocessing(pre, deit, image_size, patch[0], name)
    elif deit:
        preprocessing = _defaults(image_size, patch[0], name, hf_config.deit_defaults)
    else:
        preprocessing = None  # the family's default: ViTImageProcessor's, at the built size
    state = hf_config.read_weights(path, name)
    return arch.FolderModel(state, settings, labels, preprocessing)


def _defaults(size: tuple[int, int], patch: int, name: str, make: Any) -> Preprocessing:
    try:
        return make(size, patch)
    except ValueError as exc:
        raise CheckpointError(f"{name}: config.json's image and patch sizes do not fit ({exc})") from None


def default_preprocessing(input_size: tuple[int, int], patch_size: int) -> Preprocessing:
    """What ViTImageProcessor does by default, at the model's size: squash, bilinear, mean
    and standard deviation 0.5."""
    return hf_config.vit_defaults(input_size, patch_size)


def _check_act(config: Mapping[str, Any], name: str) -> None:
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{name}: its hidden_act {act!r:.40} is not supported: only \"gelu\" (the exact "
                              "GELU of ViT and DeiT) is")  # fmt: skip


def _whole_setting(config: Mapping[str, Any], key: str, name: str) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if not hf_config.whole(value) or value < 1:
        raise CheckpointError(f"{name}: {key} must be a positive whole number, not {value!r:.40}")
    return int(value)


class _Layout:
    """Where a state dict keeps each tensor: its prefix (``vit.``, ``deit.`` or none) and
    naming style (0: ``save_pretrained``'s, 1: recent ``transformers``' module names)."""

    def __init__(self, state: Mapping[str, torch.Tensor], name: str) -> None:
        prefix = next((p for p in _PREFIXES if f"{p}{_PATCH}" in state), None)
        if prefix is None:
            raise CheckpointError(f"{name}: has no patch embedding (vit.{_PATCH})")
        self.p = prefix
        self.style = 0 if any(k.startswith(f"{prefix}encoder.layer.") for k in state) else 1
        self.layer_re = re.compile(
            re.escape(prefix + ("encoder.layer." if self.style == 0 else "layers.")) + r"(\d+)\."
        )

    def layer(self, i: int, part: str) -> str:
        return f"{self.p}{'encoder.layer.' if self.style == 0 else 'layers.'}{i}.{part}"

    def qkv(self, i: int) -> tuple[str, str, str]:
        return tuple(self.layer(i, n) for n in _QKV[self.style])  # type: ignore[return-value]


def _plan(lay: _Layout, cfg: TokenViTConfig) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(TokenViT name, the Hugging Face names it is made of) for every tensor of ``cfg``."""
    p = lay.p
    yield "cls_token", (f"{p}embeddings.cls_token",)
    if cfg.dist_token:
        yield "dist_token", (f"{p}embeddings.distillation_token",)
    yield "pos_embed", (f"{p}embeddings.position_embeddings",)
    yield "patch_embed.proj.weight", (f"{p}{_PATCH}",)
    yield "patch_embed.proj.bias", (f"{p}embeddings.patch_embeddings.projection.bias",)
    for i in range(cfg.depth):
        q, k, v = lay.qkv(i)
        yield f"blocks.{i}.attn.qkv.weight", (f"{q}.weight", f"{k}.weight", f"{v}.weight")
        if cfg.qkv_bias:
            yield f"blocks.{i}.attn.qkv.bias", (f"{q}.bias", f"{k}.bias", f"{v}.bias")
        for ours, names in _LAYER_NAMES.items():
            for t in ("weight", "bias"):
                yield f"blocks.{i}.{ours}.{t}", (lay.layer(i, f"{names[lay.style]}.{t}"),)
    for t in ("weight", "bias"):
        yield f"norm.{t}", (f"{p}layernorm.{t}",)
        yield f"head.{t}", (f"{'cls_classifier' if cfg.dist_head else 'classifier'}.{t}",)
        if cfg.dist_head:
            yield f"head_dist.{t}", (f"distillation_classifier.{t}",)


def build(state: arch.StateDict, config: Mapping[str, Any], name: str) -> arch.Built:
    """A :class:`TokenViT` for a Hugging Face ViT or DeiT classifier's tensors and settings."""
    _check_act(config, name)
    lay = _Layout(state, name)
    cfg = _config(state, config, lay, name)
    for _, sources in _plan(lay, cfg):  # lazily: a config's huge layer count stops at the first gap
        missing = next((s for s in sources if s not in state), None)
        if missing:
            raise CheckpointError(f"{name}: does not hold {missing} (a {cfg.depth}-layer "
                                  f"{'DeiT' if cfg.dist_token else 'ViT'} of width {cfg.width} needs it)")  # fmt: skip
    plan = list(_plan(lay, cfg))  # every tensor is there: as many as the file holds
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in TokenViT(cfg).state_dict().items()}
    mapped: dict[str, torch.Tensor] = {}
    for ours, sources in plan:
        want = shapes[ours]
        part = (want[0] // len(sources), *want[1:])
        for s in sources:
            if tuple(state[s].shape) != part:
                raise CheckpointError(f"{name}: {s} has shape {tuple(state[s].shape)}, expected {part}")
        mapped[ours] = state[sources[0]] if len(sources) == 1 else torch.cat([state[s] for s in sources])
    used = {s for _, sources in plan for s in sources}
    extra = sorted(k for k in state if k not in used and not _UNUSED.match(k))
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise CheckpointError(f"{name}: holds tensors a {cfg.depth}-layer ViT classifier does not have: "
                              f"{', '.join(extra[:3])}{more}")  # fmt: skip
    return arch.build_token_vit(cfg, mapped, name)


def _config(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], lay: _Layout,
            name: str) -> TokenViTConfig:  # fmt: skip
    """The network the tensors' shapes and the settings describe."""
    if "cls_classifier.weight" in state:
        head_key, dist_head = "cls_classifier.weight", True
    elif "classifier.weight" in state:
        head_key, dist_head = "classifier.weight", False
    else:
        raise CheckpointError(f"{name}: has no classifier (no classifier.weight): a feature extractor, not a "
                              "classifier; it needs a classification head trained on top")  # fmt: skip
    proj = arch.tensor_of_rank(state, f"{lay.p}{_PATCH}", 4, name)
    width, chans, ph, pw = (int(v) for v in proj.shape)
    if chans != 3 or _whole_setting(config, "num_channels", name) not in (None, 3):
        raise CheckpointError(
            f"{name}: its patch embedding takes {chans} channels; only RGB images (3) are supported"
        )
    patch_hw = hf_config.size_pair(config.get("patch_size", [ph, pw]), "patch_size", name)
    if ph != pw:
        raise CheckpointError(
            f"{name}: its patch embedding has {pw}×{ph} kernels: only square patches are supported"
        )
    if (ph, pw) != patch_hw:
        raise CheckpointError(f"{name}: its patch embedding has {pw}×{ph} kernels, its config says "
                              f"{patch_hw[1]}×{patch_hw[0]}-px patches")  # fmt: skip
    patch = ph
    depth = _whole_setting(config, "num_hidden_layers", name)
    if depth is None:
        depth = 1 + max((int(m.group(1)) for k in state if (m := lay.layer_re.match(k))), default=-1)
        if depth == 0:
            raise CheckpointError(f"{name}: has no encoder layers ({lay.layer(0, '…')})")
    q_key, fc1_key = f"{lay.qkv(0)[0]}.weight", lay.layer(0, f"{_LAYER_NAMES['mlp.fc1'][lay.style]}.weight")
    for key in (q_key, fc1_key, f"{lay.p}embeddings.position_embeddings"):
        if key not in state:
            raise CheckpointError(f"{name}: does not hold {key}")
    inner = int(arch.tensor_of_rank(state, q_key, 2, name).shape[0])
    mlp_dim = int(arch.tensor_of_rank(state, fc1_key, 2, name).shape[0])
    heads = arch.heads_for(
        inner, {"num_heads": config.get("num_heads", config.get("num_attention_heads"))}, name
    )
    classes = int(arch.tensor_of_rank(state, head_key, 2, name).shape[0])
    arch.require_positive(name, width=width, patch_size=patch, classes=classes, mlp_width=mlp_dim)
    dist = f"{lay.p}embeddings.distillation_token" in state
    prefix = 1 + int(dist)
    positions = int(arch.tensor_of_rank(state, f"{lay.p}embeddings.position_embeddings", 3, name).shape[1])
    if config.get("image_size") is not None:
        h, w = hf_config.size_pair(config["image_size"], "image_size", name)
        if h % patch or w % patch:
            raise CheckpointError(
                f"{name}: its image size {w}×{h} is not a whole number of {patch}-px patches"
            )
        grid = (h // patch, w // patch)
        if positions != grid[0] * grid[1] + prefix:
            raise CheckpointError(f"{name}: its position embeddings hold {positions} positions; a {w}×{h} image in "
                                  f"{patch}-px patches needs {grid[0] * grid[1] + prefix}")  # fmt: skip
    else:
        side = arch.square_grid(positions - prefix, name)
        grid = (side, side)
    qkv_bias = arch.config_flag(config, "qkv_bias", f"{lay.qkv(0)[0]}.bias" in state, name)
    eps = arch.config_number(config, "layer_norm_eps", 1e-12, 0.0, 1.0, name)
    return TokenViTConfig(grid=grid, patch_size=patch, width=width, depth=depth, heads=heads, mlp_dim=mlp_dim,
                          num_classes=classes, head_dim=0 if inner == width else inner // heads,
                          qkv_bias=qkv_bias, dist_token=dist, dist_head=dist_head, eps=eps)  # fmt: skip


FAMILY = arch.register_module(
    globals(),
    "huggingface",
    "Hugging Face ViT/DeiT",
    "vit.embeddings.patch_embeddings or deit.embeddings.patch_embeddings, or a folder with config.json",
    **arch.TOKEN_VIT_HOOKS,
)
