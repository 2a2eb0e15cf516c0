"""The files of a Hugging Face ViT or DeiT folder besides the network: ``config.json`` (the
settings the builder reads, the labels), ``preprocessor_config.json`` (what the image
processor does to an image) and the weights files (one file or an index of shards).

Each is read through :mod:`..safe_files` (regular files, size caps, JSON nesting capped) and
:mod:`..state_files` (safetensors, or ``torch.load`` with ``weights_only``); anything this app
cannot reproduce exactly is one :class:`CheckpointError` sentence naming the file and setting.

The image processors (``ViTImageProcessor``, ``DeiTImageProcessor`` and the older feature
extractors) resize to ``size`` = height × width whatever the aspect ratio (our ``"squash"``
mode), optionally centre-crop to ``crop_size``, scale by ``rescale_factor`` and normalise.
A ``size`` of ``{"shortest_edge": N}`` with a centre crop is torchvision's resize-and-crop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..preprocess import Preprocessing
from ..safe_files import CONFIG_CAP, loads_json, read_small_text, require_param_budget, safetensors_numel
from ..state_files import read_state_dict, strip_prefixes
from ..text import brief

MODEL_TYPES = ("vit", "deit")
#: The weights of a folder, in the order they are looked for (safetensors first, as Hugging Face).
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: The settings of config.json the builder reads (under the names it reads them).
SETTINGS = ("model_type", "hidden_act", "layer_norm_eps", "num_attention_heads", "num_hidden_layers", "qkv_bias",
            "image_size", "patch_size", "num_channels")  # fmt: skip
#: PIL's resampling filters by number, as image processors save them.
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
#: What ViTImageProcessor and DeiTImageProcessor do when their config does not say.
STANDARD_MEAN = STANDARD_STD = (0.5, 0.5, 0.5)


def read_json(path: Path, name: str) -> dict[str, Any]:
    """The JSON object in ``path``; one sentence naming the file when it is not one."""
    text = read_small_text(path, CONFIG_CAP, f"{name}:")
    try:
        data = loads_json(text)
    except ValueError as exc:
        raise CheckpointError(f"{name}: {path.name} is not valid JSON ({brief(str(exc), 80)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{name}: {path.name} does not hold a JSON object")
    return data


def model_type(folder: Path) -> str | None:
    """``config.json``'s ``model_type`` when ``folder`` is a ViT or DeiT folder with weights."""
    try:
        if not (folder / "config.json").is_file() or not any((folder / w).is_file() for w in WEIGHTS):
            return None
        kind = read_json(folder / "config.json", folder.name).get("model_type")
    except (CheckpointError, OSError, ValueError):
        return None
    return kind if kind in MODEL_TYPES else None


def whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def size_pair(value: object, key: str, name: str) -> tuple[int, int]:
    """A size setting (a whole number, ``[h, w]`` or ``{"height", "width"}``) as (h, w)."""
    if isinstance(value, Mapping) and set(value) == {"height", "width"}:
        value = [value["height"], value["width"]]
    if whole(value):
        value = [value, value]
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(whole(v) and v >= 1 for v in value)):
        raise CheckpointError(f"{name}: {key} must be a positive whole number or a height and width, "
                              f"not {brief(repr(value), 60)}")  # fmt: skip
    return int(value[0]), int(value[1])


def labels_of(config: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    """The class names of ``id2label`` in index order; None when there are none or they are
    the placeholders ``LABEL_0``, ``LABEL_1``… that a config gets when nobody named the classes."""
    index = config.get("id2label")
    if not index:
        return None
    if not isinstance(index, Mapping):
        raise CheckpointError(f"{name}: config.json's id2label must be an object of class numbers to names")
    labels: dict[int, str] = {}
    for k, v in index.items():
        if not (isinstance(k, str) and k.strip().isdigit() and len(k) < 12) or not isinstance(
            v, (str, int, float)
        ):
            raise CheckpointError(f"{name}: config.json's id2label maps {brief(repr(k), 20)} to "
                                  f"{brief(repr(v), 40)}: expected class numbers to names")  # fmt: skip
        labels[int(k)] = str(v)
    missing = sorted(set(range(len(labels))) - set(labels))
    if missing:
        raise CheckpointError(
            f"{name}: config.json's id2label has no class {missing[0]} (classes must be 0…n-1)"
        )
    ordered = tuple(labels[i] for i in range(len(labels)))
    return None if ordered == tuple(f"LABEL_{i}" for i in range(len(ordered))) else ordered


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``config.json`` the builder reads."""
    return {k: config[k] for k in SETTINGS if k in config and config[k] is not None}


def deit_defaults(input_size: tuple[int, int], patch_size: int) -> Preprocessing:
    """DeiTImageProcessor's defaults at ``input_size``: squash to 256/224 of it (rounded so
    that the crop's margin splits evenly, as 256 − 224 does), centre-crop, bicubic, mean and
    standard deviation 0.5."""
    h, w = input_size
    short = min(h, w)
    resize = round(short * 256 / 224)
    resize += (resize - short) % 2
    return Preprocessing(input_size=(h, w), patch_size=patch_size, mean=STANDARD_MEAN, std=STANDARD_STD,
                         mode="squash", resize_size=resize, interpolation="bicubic")  # fmt: skip


def vit_defaults(input_size: tuple[int, int], patch_size: int) -> Preprocessing:
    """ViTImageProcessor's defaults at ``input_size``: squash, bilinear, mean and std 0.5."""
    return Preprocessing(input_size=tuple(input_size), patch_size=patch_size, mean=STANDARD_MEAN,
                         std=STANDARD_STD, mode="squash", interpolation="bilinear")  # fmt: skip


def _triple(value: object, key: str, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):  # fmt: skip
        raise CheckpointError(f"{name}: preprocessor_config.json's {key} must be three numbers, "
                              f"not {brief(repr(value), 60)}")  # fmt: skip
    return float(value[0]), float(value[1]), float(value[2])


def _flag(p: Mapping[str, Any], key: str, default: bool, name: str) -> bool:
    value = p.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CheckpointError(
            f"{name}: preprocessor_config.json's {key} must be true or false, not {value!r:.40}"
        )
    return value


def processor_preprocessing(p: Mapping[str, Any], deit: bool, image_size: tuple[int, int], patch_size: int,
                            name: str) -> Preprocessing:  # fmt: skip
    """What the image processor saved as ``p`` does, as a :class:`Preprocessing` (``deit``:
    DeiTImageProcessor's defaults for the settings it leaves out, else ViTImageProcessor's)."""
    kind = str(p.get("image_processor_type") or p.get("feature_extractor_type") or "")
    deit = deit or kind.startswith("DeiT")
    where = f"{name}: preprocessor_config.json"
    do_resize, do_crop = _flag(p, "do_resize", True, name), _flag(p, "do_center_crop", deit, name)
    size_value = p.get("size") or ({"height": 256, "width": 256} if deit else {"height": 224, "width": 224})
    crop_value = p.get("crop_size") or ({"height": 224, "width": 224} if deit else None)
    if do_crop and crop_value is None:
        raise CheckpointError(f"{where} asks for a centre crop but gives no crop_size")
    crop = size_pair(crop_value, "preprocessor_config.json's crop_size", name) if do_crop else None
    mode, resize = "squash", None
    if not do_resize:  # the processor expects images of the right size: make them so
        size = crop or image_size
    elif isinstance(size_value, Mapping) and set(size_value) == {"shortest_edge"}:
        edge = size_value["shortest_edge"]
        if not whole(edge) or edge < 1:
            raise CheckpointError(
                f"{where}'s size shortest_edge must be a positive whole number, not {edge!r:.40}"
            )
        if crop is None:
            raise CheckpointError(f"{where} resizes the shorter side to {edge} px without a centre crop, which "
                                  "gives inputs of varying shape; a fixed input size is needed")  # fmt: skip
        mode, size, resize = "resize_crop", crop, int(edge)
    else:
        target = size_pair(size_value, "preprocessor_config.json's size", name)
        size = crop or target
        if crop is not None and crop != target:
            (ch, cw), (th, tw) = crop, target
            resize = th if ch <= cw else tw
            s = resize / min(ch, cw)
            if (round(cw * s), round(ch * s)) != (tw, th) or ch > th or cw > tw:
                raise CheckpointError(f"{where} resizes to {tw}×{th} and crops {cw}×{ch}: only a crop of the "
                                      "same shape, no larger than the resized image, can be reproduced")  # fmt: skip
    resample = p.get("resample", 3 if deit else 2)
    names = {v: k for k, v in RESAMPLE.items()}
    resample = names.get(resample.lower(), resample) if isinstance(resample, str) else resample
    if resample not in RESAMPLE or isinstance(resample, bool):
        raise CheckpointError(f"{where}'s resample {resample!r:.40} is not a PIL filter number (0–5)")
    factor = p.get("rescale_factor", 1 / 255) if _flag(p, "do_rescale", True, name) else 1.0
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < math.inf:
        raise CheckpointError(f"{where}'s rescale_factor must be a positive number, not {factor!r:.40}")
    if _flag(p, "do_normalize", True, name):
        mean = _triple(p.get("image_mean", STANDARD_MEAN), "image_mean", name)
        std = _triple(p.get("image_std", STANDARD_STD), "image_std", name)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # (v·factor − mean) / std on 0…255 values is (v/255 − mean′) / std′ on our 0…1 values.
    k = 1.0 if abs(factor * 255 - 1) < 1e-9 else factor * 255
    try:
        return Preprocessing(input_size=size, patch_size=patch_size, mean=tuple(m / k for m in mean),
                             std=tuple(s / k for s in std), mode=mode, resize_size=resize,
                             interpolation=RESAMPLE[resample])  # fmt: skip
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def read_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of ``folder``: ``model.safetensors``, else its shards, else
    ``pytorch_model.bin`` (read with ``weights_only``), else its shards."""
    for file in WEIGHTS:
        path = folder / file
        if not path.is_file():
            continue
        if not file.endswith(".index.json"):
            return strip_prefixes(read_state_dict(path)[0])
        index = read_json(path, name).get("weight_map")
        if not isinstance(index, Mapping) or not index:
            raise CheckpointError(f"{name}: {file} has no weight_map of tensor names to files")
        shards = sorted({str(v) for v in index.values()})
        for shard in shards:
            if Path(shard).name != shard or shard.startswith(".") or not (folder / shard).is_file():
                raise CheckpointError(
                    f"{name}: {file} names the shard {brief(shard, 60)!r}, not a file in the folder"
                )
        if file.startswith("model.safetensors"):
            require_param_budget(sum(safetensors_numel(folder / s, f"{name}/{s}") for s in shards), name)
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_state_dict(folder / shard)[0])
        return strip_prefixes(state)
    raise CheckpointError(f"{name}: holds no model.safetensors or pytorch_model.bin")
