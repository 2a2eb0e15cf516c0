"""Local checkpoints: read safely, recognise the architecture from tensor shapes, build it.

Only ``torch.load(..., weights_only=True)`` and safetensors are used, so a checkpoint can
never run code.  Two families are understood:

* torchvision ``VisionTransformer`` state dicts of any size (patch size, width, depth, MLP
  width, image size, classes from the shapes; heads from the width's standard value);
* the article-style minimal ViT (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
  ``transformer.layers.N…``, ``mlp_head``) including our own ``demo-shapes`` model.

Settings that shapes cannot tell (heads, pre- or post-norm, preprocessing) come from the
safetensors header or a ``NAME.config.json`` file next to the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .minivit import MiniViT, MiniViTConfig
from .preprocess import Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
_WRAPPERS = ("state_dict", "model_state_dict", "model", "module", "net", "ema")
_TV_LAYER = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.")
_MINI_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")
_STEM_CONV = re.compile(r"^patch_embed\.stem\.(\d+)\.weight$")


@dataclass(frozen=True)
class BuiltModel:
    module: nn.Module
    family: str  # "torchvision" or "minivit"
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    name: str
    warnings: tuple[str, ...] = ()


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata from a .safetensors or .pth/.pt file, safely."""
    name = path.name
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{name}: is a folder, not a checkpoint file")
    if not stat.S_ISREG(info.st_mode):  # a pipe or device would block or never end
        raise CheckpointError(f"{name}: is not a regular file (a pipe or a device), not a checkpoint")
    if info.st_size == 0:
        raise CheckpointError(f"{name}: the file is empty")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{name}: not a valid safetensors file ({_brief(exc)})") from None
        except MemoryError:
            raise CheckpointError(f"{name}: not enough memory to read this checkpoint") from None
        return state, meta
    try:
        with warnings.catch_warnings():
            # torch notes unusual pickle protocols; the safe loader still decides alone.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The safe unpickler stops at the first thing that is not a tensor or a plain
        # container: a code-running pickle and random bytes both end here, and nothing ran.
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        what = f"it holds a Python object ({found.group(1).rstrip('.')}), " if found else ""
        raise CheckpointError(
            f"{name}: refused by the safe loader: {what}not a plain tensor checkpoint (a file holding "
            "other Python objects could run code); save a state_dict or use safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint ({_brief(exc)})") from None
    except MemoryError:
        raise CheckpointError(f"{name}: not enough memory to read this checkpoint") from None
    return _unwrap(obj, name), {}


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "…"


def _unwrap(obj, name: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            for key in _WRAPPERS:
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{name}: holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{name}: holds no tensors")
    return tensors


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and sum(isinstance(v, torch.Tensor) for v in d.values()) >= len(d) / 2


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod.", "model."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def _sidecar(path: Path, suffix: str) -> Path | None:
    stem = path.with_suffix("")
    for cand in (Path(f"{stem}{suffix}"), Path(f"{path}{suffix}")):
        if cand.exists():
            return cand
    return None


def read_labels(
    path: Path, num_classes: int, meta: dict[str, str], labels_path: Path | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Labels for a checkpoint and any warnings; a count mismatch is an error.

    ``labels_path`` (a ``.txt`` with one label per line, or a ``.json`` list or index →
    label object) wins over the sidecar files next to the checkpoint."""
    labels: list[str] | None = None
    source = None
    txt = _sidecar(path, ".labels.txt")
    js = _sidecar(path, ".labels.json")
    if labels_path is not None:
        if not labels_path.is_file():
            raise CheckpointError(f"labels file {labels_path} does not exist")
        is_json = labels_path.suffix.lower() == ".json"
        txt, js = (None, labels_path) if is_json else (labels_path, None)
    try:
        if txt is not None:
            lines = txt.read_text(encoding="utf-8-sig").splitlines()
            while lines and not lines[-1].strip():
                lines.pop()
            labels, source = [ln.strip() for ln in lines], txt.name
        elif js is not None:
            data = json.loads(js.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                data = _labels_from_index(data)
            if not isinstance(data, list):
                raise ValueError("expected a list of labels or an index → label object")
            labels, source = [str(x) for x in data], js.name
        elif "labels" in meta:
            labels, source = [str(x) for x in json.loads(meta["labels"])], "the file's metadata"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"labels file for {path.name} could not be read: {_brief(exc)}") from None
    if labels is None:
        return tuple(f"class {i}" for i in range(num_classes)), ()
    if len(labels) != num_classes:
        raise CheckpointError(
            f"{source} has {len(labels)} labels but {path.name} predicts {num_classes} classes; "
            "fix the labels file so each line names one class, in order"
        )
    return tuple(labels), ()


def _labels_from_index(data: dict) -> list:
    """An ``{"0": "cat", "1": "dog"}`` object as a list; the indices must be 0…n-1 exactly,
    or the names would silently land on the wrong classes."""
    try:
        index = {int(k): v for k, v in data.items()}
    except (TypeError, ValueError):
        raise ValueError("the keys of a labels object must be class numbers") from None
    missing = sorted(set(range(len(index))) - set(index))
    if missing:
        raise ValueError(f"class numbers must run from 0 to {len(index) - 1}; {missing[0]} is missing")
    return [index[i] for i in range(len(index))]


def _config_overrides(path: Path, meta: dict[str, str]) -> dict:
    cfg: dict = {}
    if "config" in meta:
        try:
            cfg.update(_json_object(meta["config"]))
        except ValueError:
            raise CheckpointError(f"{path.name}: its metadata holds a broken config") from None
    side = _sidecar(path, ".config.json")
    if side is not None:
        try:
            cfg.update(_json_object(side.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{side.name} could not be read: {_brief(exc)}") from None
    if "preprocessing" in meta and "preprocessing" not in cfg:
        try:
            cfg["preprocessing"] = json.loads(meta["preprocessing"])
        except ValueError:
            raise CheckpointError(f"{path.name}: its metadata holds broken preprocessing") from None
    return cfg


def _json_object(text: str) -> dict:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object of settings")
    return data


def _heads(width: int, cfg: dict, name: str) -> int:
    try:
        heads = int(cfg.get("num_heads") or _STANDARD_HEADS.get(width) or max(1, width // 64))
    except (TypeError, ValueError):
        raise CheckpointError(f"{name}: num_heads must be a whole number") from None
    if heads < 1:
        raise CheckpointError(f"{name}: num_heads must be at least 1")
    if width % heads:
        raise CheckpointError(f"{name}: width {width} is not divisible by {heads} attention heads")
    return heads


def _grid_from_tokens(n_tokens: int, name: str) -> int:
    if n_tokens < 1:
        raise CheckpointError(f"{name}: its position embeddings hold no patch positions")
    grid = math.isqrt(n_tokens)
    if grid * grid != n_tokens:
        raise CheckpointError(f"{name}: {n_tokens} position embeddings do not form a square patch grid")
    return grid


def _positive(name: str, **dims: int) -> None:
    """Refuse a file whose tensor shapes give a zero-sized model (no classes, no width…)."""
    bad = [f"{k.replace('_', ' ')} {v}" for k, v in dims.items() if v < 1]
    if bad:
        raise CheckpointError(f"{name}: its tensor shapes give an empty model ({', '.join(bad)})")


def _ndim(state: dict[str, torch.Tensor], key: str, ndim: int, name: str) -> torch.Tensor:
    t = state[key]
    if t.ndim != ndim:
        raise CheckpointError(f"{name}: {key} has {t.ndim} dimensions, expected {ndim}")
    return t


def _preprocessing(cfg: dict, image_size: int, patch: int) -> Preprocessing:
    p = cfg.get("preprocessing")
    if p:
        size = p.get("input_size", image_size)
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return Preprocessing(
            input_size=(h, w),
            patch_size=int(p.get("patch_size", patch)),
            mean=tuple(p.get("mean", IMAGENET_MEAN)),
            std=tuple(p.get("std", IMAGENET_STD)),
            mode=p.get("mode", "resize_crop"),
            resize_size=p.get("resize_size"),
            interpolation=p.get("interpolation", "bilinear"),
        )
    return Preprocessing(
        input_size=(image_size, image_size),
        patch_size=patch,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        mode="resize_crop",
        resize_size=round(image_size * 256 / 224),
        interpolation="bilinear",
    )


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing[:4]) + (" …" if len(missing) > 4 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:4]) + (" …" if len(unexpected) > 4 else ""))
    if wrong:
        problems.append("wrong shape " + ", ".join(wrong[:3]) + (" …" if len(wrong) > 3 else ""))
    if problems:
        raise CheckpointError(f"{name}: does not fit the inferred architecture: " + "; ".join(problems))
    module.load_state_dict(state, strict=False)


def build_torchvision(state: dict[str, torch.Tensor], cfg: dict, name: str) -> tuple[nn.Module, int, int]:
    from torchvision.models.vision_transformer import VisionTransformer

    w = _ndim(state, "conv_proj.weight", 4, name)
    width, patch = int(w.shape[0]), int(w.shape[-1])
    _positive(name, width=width, patch_size=patch)
    depth = 1 + max((int(m.group(1)) for k in state if (m := _TV_LAYER.match(k))), default=-1)
    if depth == 0:
        raise CheckpointError(f"{name}: has no encoder.layers.encoder_layer_N blocks")
    mlp_key = "encoder.layers.encoder_layer_0.mlp.0.weight"
    if mlp_key not in state:
        mlp_key = "encoder.layers.encoder_layer_0.mlp.linear_1.weight"
    if mlp_key not in state:
        raise CheckpointError(f"{name}: missing the first MLP weight of encoder layer 0")
    mlp_dim = int(state[mlp_key].shape[0])
    pos = state.get("encoder.pos_embedding")
    if pos is None:
        raise CheckpointError(f"{name}: missing encoder.pos_embedding")
    pos = _ndim(state, "encoder.pos_embedding", 3, name)
    grid = _grid_from_tokens(int(pos.shape[1]) - 1, name)
    image_size = grid * patch
    head = state.get("heads.head.weight")
    if head is None:
        raise CheckpointError(f"{name}: missing heads.head.weight (the classification head)")
    rep = state.get("heads.pre_logits.weight")
    _positive(name, classes=int(head.shape[0]), mlp_width=mlp_dim,
              representation_size=int(rep.shape[0]) if rep is not None else 1)  # fmt: skip
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch,
        num_layers=depth,
        num_heads=_heads(width, cfg, name),
        hidden_dim=width,
        mlp_dim=mlp_dim,
        num_classes=int(head.shape[0]),
        representation_size=int(rep.shape[0]) if rep is not None else None,
    )
    # torchvision renames old "mlp.linear_1" keys itself in _load_from_state_dict.
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{name}: does not fit a VisionTransformer ({_brief(exc)})") from None
    if missing or unexpected:
        bits = []
        if missing:
            bits.append("missing " + ", ".join(missing[:4]))
        if unexpected:
            bits.append("unexpected " + ", ".join(unexpected[:4]))
        raise CheckpointError(f"{name}: does not fit a VisionTransformer: " + "; ".join(bits))
    return model, image_size, patch


def build_minivit(state: dict[str, torch.Tensor], cfg: dict, name: str) -> tuple[nn.Module, int, int]:
    proj = _ndim(state, "patch_embed.proj.weight", 4, name)
    width, k = int(proj.shape[0]), int(proj.shape[-1])
    _positive(name, width=width, patch_size=k)
    stem_idx = sorted(
        int(m.group(1)) for key in state if (m := _STEM_CONV.match(key)) and state[key].ndim == 4
    )
    stem = tuple(int(state[f"patch_embed.stem.{i}.weight"].shape[0]) for i in stem_idx)
    strides = tuple(int(v) for v in cfg.get("stem_strides", ())) or (2,) * len(stem)
    if len(strides) != len(stem):
        raise CheckpointError(
            f"{name}: its config gives {len(strides)} stem strides for {len(stem)} stem convolutions"
        )
    patch = k * math.prod(strides)
    pos = state.get("pos_embed")
    if pos is None or "cls_token" not in state:
        raise CheckpointError(f"{name}: missing cls_token or pos_embed")
    pos = _ndim(state, "pos_embed", 3, name)
    grid = _grid_from_tokens(int(pos.shape[1]) - 1, name)
    layers = [int(m.group(1)) for key in state if (m := _MINI_LAYER.match(key))]
    if not layers:
        raise CheckpointError(f"{name}: has no transformer.layers.N encoder blocks")
    if "mlp_head.weight" in state:
        head_w, head_norm = state["mlp_head.weight"], False
    elif "mlp_head.1.weight" in state:
        head_w, head_norm = state["mlp_head.1.weight"], True
    else:
        raise CheckpointError(f"{name}: missing mlp_head.weight (the classification head)")
    _positive(name, classes=int(head_w.shape[0]), stem_strides=min(strides, default=1))
    config = MiniViTConfig(
        image_size=grid * patch,
        patch_size=patch,
        num_classes=int(head_w.shape[0]),
        embed_dim=width,
        depth=1 + max(layers),
        num_heads=_heads(width, cfg, name),
        mlp_dim=int(state["transformer.layers.0.linear1.weight"].shape[0])
        if "transformer.layers.0.linear1.weight" in state
        else 4 * width,
        # The tutorial's nn.TransformerEncoderLayer is post-norm unless told otherwise.
        norm_first=bool(cfg.get("norm_first", False)),
        final_norm="transformer.norm.weight" in state,
        head_norm=head_norm,
        stem_channels=stem,
        stem_strides=strides if cfg.get("stem_strides") else (),
        input_norm=bool(cfg.get("input_norm", False)),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
    )
    try:
        model = MiniViT(config)
    except ValueError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    _load_strict(model, state, name)
    return model, config.image_size, patch


def family_of(state: dict[str, torch.Tensor]) -> str | None:
    if "conv_proj.weight" in state and "class_token" in state:
        return "torchvision"
    if "patch_embed.proj.weight" in state:
        return "minivit"
    return None


def load_checkpoint(path: str | os.PathLike[str], display_name: str | None = None,
                    labels: str | os.PathLike[str] | None = None) -> BuiltModel:  # fmt: skip
    """Build an eval-mode model from a local checkpoint file (``labels``: an optional
    labels file instead of the ones next to it)."""
    p = Path(path)
    name = p.name
    state, meta = read_state_dict(p)
    state = strip_prefixes(state)
    cfg = _config_overrides(p, meta)
    family = family_of(state)
    builders = {"torchvision": build_torchvision, "minivit": build_minivit}
    if family in builders:
        try:
            model, image_size, patch = builders[family](state, cfg, name)
        except CheckpointError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError, ArithmeticError) as exc:
            raise CheckpointError(f"{name}: could not build the model ({_brief(exc)})") from None
        except MemoryError:
            raise CheckpointError(f"{name}: not enough memory to build this model") from None
    else:
        found = ", ".join(sorted(state)[:5]) + (" …" if len(state) > 5 else "")
        raise CheckpointError(
            f"{name}: not a Vision Transformer this app knows: expected conv_proj.weight and "
            f"class_token (torchvision) or patch_embed.proj.weight, cls_token and pos_embed "
            f"(minimal ViT); found {found}"
        )
    _refuse_non_finite(model, name)
    num_classes = _num_classes(model)
    names, warns = read_labels(p, num_classes, meta, Path(labels) if labels else None)
    try:
        pre = _preprocessing(cfg, image_size, patch)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{name}: bad preprocessing settings ({_brief(exc)})") from None
    if pre.input_size != (image_size, image_size) or pre.patch_size != patch:
        h, w = pre.input_size
        raise CheckpointError(
            f"{name}: its preprocessing asks for {w}×{h} px in {pre.patch_size}-px patches, but the "
            f"weights are for {image_size}×{image_size} px in {patch}-px patches"
        )
    model.eval()
    _probe(model, pre, name)
    return BuiltModel(model, family, pre, names, display_name or p.stem, warns)


#: Models up to this many parameter × token products (ViT-B/16 at 224 px is 1.7e10) get a
#: trial forward pass at load time; bigger ones would make loading slow on a CPU.
PROBE_MAX_WORK = 2e10


def _probe(model: nn.Module, pre: Preprocessing, name: str) -> None:
    """One forward pass on a fixed noise image: weights that are finite but so large that the
    activations overflow, or shapes that build but cannot run, are refused here in one line
    instead of giving NaN predictions (or a crash) for every image later."""
    h, w = pre.input_size
    tokens = (h // pre.patch_size) * (w // pre.patch_size) + 1
    if sum(p.numel() for p in model.parameters()) * tokens > PROBE_MAX_WORK:
        return
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            out = model(x)
    except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError) as exc:
        raise CheckpointError(f"{name}: the model fails on a test image ({_brief(exc)})") from None
    except MemoryError:
        raise CheckpointError(f"{name}: not enough memory to run this model") from None
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(
            f"{name}: the model's outputs overflow to NaN or infinity on a test image (weights far too "
            "large or damaged), so it cannot give meaningful predictions"
        )


def _refuse_non_finite(model: nn.Module, name: str) -> None:
    """A weight that is NaN or infinite makes every prediction NaN: say so at load time."""
    with torch.no_grad():
        for key, p in model.named_parameters():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                raise CheckpointError(
                    f"{name}: {key} holds NaN or infinite values, so the model cannot give "
                    "meaningful predictions (a damaged or diverged checkpoint)"
                )


def _num_classes(model: nn.Module) -> int:
    if isinstance(model, MiniViT):
        return model.config.num_classes
    return int(model.heads.head.out_features)
