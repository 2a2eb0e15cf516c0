"""timm model folders, as timm saves them for the Hugging Face hub (``save_for_hf``,
``push_to_hf_hub``): a ``config.json`` whose top level names the ``architecture`` and holds the
``pretrained_cfg`` (input size, interpolation, crop, mean and standard deviation), optional
``label_names`` and ``model_args``, next to ``model.safetensors`` or ``pytorch_model.bin``.

Transformers' folders (``model_type``/``architectures`` at the top) are the Hugging Face
family's.  The preprocessing is timm's evaluation transform for the ``pretrained_cfg``
(``resolve_data_config`` then ``create_transform(is_training=False)``), reproduced exactly or
refused in one line; timm itself is not needed to read the folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..architectures import IMAGENET_MEAN, IMAGENET_STD, FolderModel, StateDict
from ..errors import CheckpointError
from ..preprocess import Preprocessing
from ..safe_files import CONFIG_CAP, loads_json, read_small_text
from ..state_files import read_state_dict, strip_prefixes
from ..text import brief

CONFIG = "config.json"
#: The weights files timm writes into a folder, in the order they are read.
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: timm's interpolation names that Pillow resizes with (timm's "random" is for training).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
#: timm's defaults when a ``pretrained_cfg`` leaves a setting out (``timm.data.constants``).
DEFAULT_CROP_PCT = 0.875
DEFAULT_INPUT = (3, 224, 224)
#: ``model_args`` the builder reads (what the tensors cannot tell, or confirms).
MODEL_ARGS = ("num_heads", "class_token", "no_embed_class", "img_size", "global_pool", "act_layer")


def _config(path: Path) -> object:
    return loads_json(read_small_text(path / CONFIG, CONFIG_CAP, "config file"))


def is_timm_config(cfg: object) -> bool:
    """timm's hub config: ``architecture`` (a name) and ``pretrained_cfg`` (settings) at the top."""
    return (
        isinstance(cfg, dict)
        and isinstance(cfg.get("architecture"), str)
        and isinstance(cfg.get("pretrained_cfg"), dict)
    )


def weights_file(path: Path) -> Path | None:
    """The folder's weights file (:data:`WEIGHTS`), or None."""
    return next((path / w for w in WEIGHTS if (path / w).is_file()), None)


def recognise_folder(path: Path) -> bool:
    """A folder holding timm's ``config.json`` and a weights file."""
    try:
        return weights_file(path) is not None and is_timm_config(_config(path))
    except (CheckpointError, ValueError, OSError):
        return False


def read_folder(path: Path, name: str) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """The folder's tensors (prefixes stripped), its whole config, and the settings the
    builder reads (:data:`MODEL_ARGS` from ``model_args``, the top-level ``global_pool``)."""
    try:
        cfg = _config(path)
    except ValueError as exc:
        raise CheckpointError(f"{name}: its {CONFIG} could not be read ({brief(str(exc))})") from None
    if not is_timm_config(cfg):
        raise CheckpointError(f"{name}: its {CONFIG} is not timm's (architecture and pretrained_cfg)")
    weights = weights_file(path)
    if weights is None:
        raise CheckpointError(f"{name}: holds no {' or '.join(WEIGHTS)}")
    state, _ = read_state_dict(weights)
    args = cfg.get("model_args")
    settings = {k: args[k] for k in MODEL_ARGS if k in args} if isinstance(args, dict) else {}
    if isinstance(cfg.get("global_pool"), str):  # what the saved model pooled with
        settings["global_pool"] = cfg["global_pool"]
    if "quickgelu" in cfg["architecture"]:  # OpenAI CLIP's activation: the tensors do not show it
        settings.setdefault("act_layer", "quick_gelu")
    return strip_prefixes(state), cfg, settings


def folder_model(state: StateDict, cfg: dict[str, Any], settings: dict[str, Any], name: str) -> FolderModel:
    """What :func:`read_folder` read, with the labels (``label_names`` of the head's class
    count) and timm's evaluation preprocessing (:func:`timm_preprocessing`)."""
    head = state.get("head.weight")
    classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 0
    proj = state["patch_embed.proj.weight"]
    pre = timm_preprocessing(cfg["pretrained_cfg"], int(proj.shape[-1]), name)
    return FolderModel(state, settings, label_names(cfg, classes), pre)


def label_names(cfg: dict[str, Any], classes: int) -> tuple[str, ...] | None:
    """``label_names`` as a tuple when it names each of ``classes`` classes once (a list, or
    an object from "0"… to its last class number), each replaced by its ``label_descriptions``
    entry when every one has one (timm's ImageNet names are WordNet ids: "n01440764" is
    "tench, Tinca tinca"); None otherwise (numbered labels)."""
    value = cfg.get("label_names")
    if isinstance(value, dict):
        keys = {str(i) for i in range(len(value))}
        value = [value[str(i)] for i in range(len(value))] if set(value) == keys else None
    if not isinstance(value, list) or len(value) != classes or classes == 0:
        return None
    if not all(isinstance(v, str) and len(v) <= 1000 for v in value):
        return None
    described = cfg.get("label_descriptions")
    if isinstance(described, dict) and all(isinstance(described.get(v), str) for v in value):
        value = [described[v][:1000] for v in value]
    return tuple(value)


def _setting(pcfg: dict[str, Any], key: str, default: Any) -> Any:
    """``pretrained_cfg[key]``, or timm's default when it is absent or empty (as
    ``resolve_data_config`` reads it)."""
    value = pcfg.get(key)
    return value if value else default


def timm_preprocessing(pcfg: dict[str, Any], patch: int, name: str) -> Preprocessing:
    """timm's evaluation transform for ``pretrained_cfg``: ``crop_mode`` "center" resizes the
    shorter side to floor(size / crop_pct) and centre-crops; "squash" resizes both sides to
    floor(side / crop_pct) and centre-crops; "border" (pad with the mean) is refused, as are
    a crop larger than the resized image and a centre crop of a non-square input (timm resizes
    those by its own ratio rule)."""
    size = pcfg.get("input_size") or DEFAULT_INPUT
    if not (isinstance(size, list | tuple) and len(size) == 3 and all(type(v) is int for v in size)):
        raise CheckpointError(
            f"{name}: pretrained_cfg input_size must be [channels, height, width], not {size!r:.40}"
        )
    if size[0] != 3:
        raise CheckpointError(
            f"{name}: pretrained_cfg input_size asks for {size[0]}-channel images; the app gives RGB"
        )
    h, w = size[1], size[2]
    interpolation = _setting(pcfg, "interpolation", "bicubic")
    mode = _setting(pcfg, "crop_mode", "center")
    crop_pct = _setting(pcfg, "crop_pct", DEFAULT_CROP_PCT)
    if interpolation not in INTERPOLATIONS:
        raise CheckpointError(
            f"{name}: pretrained_cfg interpolation {interpolation!r:.40} is not one of {', '.join(INTERPOLATIONS)}"
        )
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, int | float) or not 0 < crop_pct <= 1:
        raise CheckpointError(
            f"{name}: pretrained_cfg crop_pct {crop_pct!r:.40} is not supported (a number above 0, at most 1: "
            "a larger one pads the image)"
        )
    scaled = (math.floor(h / crop_pct), math.floor(w / crop_pct))  # timm's own arithmetic
    if mode == "border":
        raise CheckpointError(
            f"{name}: pretrained_cfg crop_mode 'border' (scale the longer side, pad with the mean) is not "
            "supported; set crop_mode to center or squash in its config.json"
        )
    if mode not in ("center", "squash"):
        raise CheckpointError(
            f"{name}: pretrained_cfg crop_mode {mode!r:.40} is not center, squash or border"
        )
    if mode == "center" and h != w:
        raise CheckpointError(
            f"{name}: pretrained_cfg asks for a centre crop of a non-square {w}×{h} input, which timm resizes "
            "by its own ratio rule; not supported"
        )
    for key in ("mean", "std"):
        v = _setting(pcfg, key, IMAGENET_MEAN if key == "mean" else IMAGENET_STD)
        if not (isinstance(v, list | tuple) and len(v) == 3):
            raise CheckpointError(f"{name}: pretrained_cfg {key} must be three numbers, not {v!r:.40}")
    try:
        pre = Preprocessing(
            input_size=(h, w), patch_size=patch, mean=tuple(_setting(pcfg, "mean", IMAGENET_MEAN)),
            std=tuple(_setting(pcfg, "std", IMAGENET_STD)), mode="resize_crop" if mode == "center" else "squash",
            resize_size=min(scaled), interpolation=interpolation,
        )  # fmt: skip
    except ValueError as exc:
        raise CheckpointError(
            f"{name}: its pretrained_cfg gives a preprocessing the app cannot use ({exc})"
        ) from None
    if mode == "squash" and pre.resized_size((w, h)) != (scaled[1], scaled[0]):
        raise CheckpointError(
            f"{name}: pretrained_cfg squashes a {w}×{h} input to {scaled[1]}×{scaled[0]}, which the app cannot "
            "reproduce exactly"
        )
    return pre
