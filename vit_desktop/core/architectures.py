"""The model registry: one :class:`Family` per kind of Vision Transformer the app can build.

A family says, as data and small functions, everything the rest of the core asks about a
kind of model:

* how it is recognised: from a state dict's keys (:attr:`Family.recognise`) and, for
  formats that are folders (a Hugging Face snapshot), from a folder (:attr:`Family.recognise_folder`);
* how it is built from a state dict and the settings found next to it (:attr:`Family.build`,
  which also says the input size and patch size the weights are for), and how a catalog
  entry of its architecture is built, with or without its published weights
  (:attr:`Family.build_entry`);
* how its classes are counted, where its attention is computed (the modules that
  :mod:`.capture` instruments), and its default preprocessing and labels when a checkpoint
  brings none.

The built-in families register themselves when the :mod:`.families` package is imported
(:mod:`.checkpoints` and :mod:`.loading` import it; this module does not, so that the
families can import it without an import circle).  Checkpoints
(:func:`.checkpoints.load_checkpoint`), catalog entries (:mod:`.loading`) and attention
capture (:func:`.capture.attention_modules`) all dispatch through this registry, so a new
kind of model is one new module in ``families/``.

The shape and settings helpers at the bottom (:func:`heads_for`, :func:`config_flag`,
:func:`config_number`, :func:`require_fits`, :func:`square_grid`, :func:`require_positive`,
:func:`tensor_of_rank`, :func:`load_exactly`) turn a malformed state dict or config into one
:class:`CheckpointError` sentence; the families' builders share them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import CheckpointError, WeightsError
from .preprocess import Preprocessing
from .safe_files import require_param_budget
from .tokenvit import TokenViT, TokenViTConfig, parameter_count

if TYPE_CHECKING:
    from .catalog import ModelEntry

StateDict = dict[str, torch.Tensor]

#: ImageNet statistics: the default normalisation of a checkpoint that names none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Attention heads of the standard ViT widths (Ti, S, B, L, H) when a checkpoint does not say.
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


@dataclass(frozen=True)
class Built:
    """A module built from a state dict, with the input it was built for."""

    module: nn.Module
    input_size: tuple[int, int]  # (height, width) in pixels
    patch_size: int


@dataclass(frozen=True)
class FolderModel:
    """What a model folder holds (a Hugging Face or timm snapshot), read by its family's
    ``load_folder``: the tensors (prefixes stripped), the settings ``build`` reads, and the
    labels and preprocessing its config files give (None: the family's defaults)."""

    state: StateDict
    config: Mapping[str, Any]
    labels: tuple[str, ...] | None = None
    preprocessing: Preprocessing | None = None


def imagenet_preprocessing(input_size: tuple[int, int], patch_size: int) -> Preprocessing:
    """torchvision's classic evaluation transform for ``input_size``: resize the shorter side
    to 256/224 of the crop, centre-crop, ImageNet mean and standard deviation."""
    h, w = input_size
    return Preprocessing(
        input_size=(h, w),
        patch_size=patch_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        mode="resize_crop",
        resize_size=round(min(h, w) * 256 / 224),
        interpolation="bilinear",
    )


def numbered_labels(num_classes: int) -> tuple[str, ...]:
    """``("class 0", "class 1", …)``: labels for a model whose class names are unknown."""
    return tuple(f"class {i}" for i in range(num_classes))


@dataclass(frozen=True)
class Family:
    """One kind of Vision Transformer: how to recognise, build and look inside it.

    ``name`` is what :attr:`.checkpoints.BuiltModel.family` reports and the part of a catalog
    entry's ``architecture`` before the colon (``"torchvision:vit_b_16"`` → ``"torchvision"``).
    ``title`` and ``expects`` make the sentence shown for a file no family recognises:
    "expected {expects} ({title}) or …".
    """

    name: str
    title: str
    expects: str
    #: True when a state dict (prefixes already stripped) has this family's layout.
    recognise: Callable[[Mapping[str, torch.Tensor]], bool]
    #: ``build(state, config, name)``: the module with the weights loaded, its input size and
    #: patch size; ``config`` holds the settings from the file's metadata or a sidecar
    #: ``NAME.config.json``; ``name`` starts every error message (a :class:`CheckpointError`).
    build: Callable[[StateDict, Mapping[str, Any], str], Built]
    #: How many classes a module built by this family predicts.
    num_classes: Callable[[nn.Module], int]
    #: True for a module of this family's type (whichever way it was built).
    owns_module: Callable[[nn.Module], bool]
    #: ``build_entry(entry, state)``: a catalog entry's module, from its published weights or,
    #: with ``state=None``, with random weights (and a usable random head); raises
    #: :class:`WeightsError` when the weights do not fit.  None: the family has no catalog entries.
    build_entry: Callable[[ModelEntry, StateDict | None], nn.Module] | None = None
    #: True for a folder holding a model of this family (None: the family reads files only).
    recognise_folder: Callable[[Path], bool] | None = None
    #: ``load_folder(path, name)``: the tensors, settings, labels and preprocessing of a folder
    #: that ``recognise_folder`` accepted (a :class:`CheckpointError` naming what is wrong).
    load_folder: Callable[[Path, str], FolderModel] | None = None
    #: ``resize(module, grid)``: make a built module run on another (rows, cols) patch grid
    #: (position embeddings resampled); None: the family's models run at one size only.
    resize: Callable[[nn.Module, tuple[int, int]], None] | None = None
    #: The modules whose attention :class:`.capture.AttentionCapture` records, in forward
    #: order; None: every ``nn.MultiheadAttention`` (:func:`.capture.multihead_attention_modules`).
    attention_modules: Callable[[nn.Module], list[nn.Module]] | None = None
    #: The model split in three for class-specific maps (:mod:`.explain`); all four or none.
    #: ``embed_tokens(module, x)``: the tokens (B, N, D) the first block takes (patches embedded,
    #: prefix tokens put in front, position embeddings added);
    #: ``encoder_blocks(module)``: the blocks in forward order, each (B, N, D) → (B, N, D) and
    #: holding one of ``attention_modules`` (in the same order), taking any number of tokens;
    #: ``classify_tokens(module, tokens)``: the logits from the last block's output (final norm,
    #: pooling, head), so that ``classify_tokens(encoder_blocks…(embed_tokens(x)))`` is the
    #: model's forward;
    #: ``gradcam_layer(module, index)``: block ``index``'s first LayerNorm, whose output token
    #: Grad-CAM reads (pytorch-grad-cam's ViT target layer).
    embed_tokens: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    encoder_blocks: Callable[[nn.Module], list[nn.Module]] | None = None
    classify_tokens: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    gradcam_layer: Callable[[nn.Module, int], nn.Module] | None = None
    #: Preprocessing for a checkpoint that names none, from its (height, width) and patch size.
    default_preprocessing: Callable[[tuple[int, int], int], Preprocessing] = imagenet_preprocessing
    #: Labels for a checkpoint that brings none, from its class count.
    default_labels: Callable[[int], tuple[str, ...]] = numbered_labels
    #: Families are tried in descending priority, then in registration order: a family whose
    #: layout is a special case of another's (DeiT's distillation token on a timm layout)
    #: gets a higher priority so it is asked first.
    priority: int = 0


_lock = threading.Lock()
_families: dict[str, Family] = {}


def register(family: Family, *, replace: bool = False) -> Family:
    """Add ``family`` to the registry and return it; a second family of the same name is
    refused unless ``replace`` is true."""
    with _lock:
        if family.name in _families and not replace:
            raise ValueError(f"a model family called {family.name!r} is already registered")
        _families.pop(family.name, None)
        _families[family.name] = family
    return family


#: The hooks of :class:`Family` a family module may define as functions of those names.
HOOKS = ("recognise", "build", "num_classes", "owns_module", "build_entry", "recognise_folder",
         "load_folder", "attention_modules", "default_preprocessing", "default_labels",
         "resize", "embed_tokens", "encoder_blocks", "classify_tokens", "gradcam_layer")  # fmt: skip


def register_module(
    namespace: Mapping[str, Any], name: str, title: str, expects: str, **settings: Any
) -> Family:
    """Register a family written as one module: its hooks are the module's functions named
    as in :data:`HOOKS` (pass ``globals()``); ``settings`` are further :class:`Family` fields."""
    hooks = {k: namespace[k] for k in HOOKS if callable(namespace.get(k))}
    return register(Family(name=name, title=title, expects=expects, **hooks, **settings))


def unregister(name: str) -> None:
    """Remove the family called ``name`` (nothing happens if there is none)."""
    with _lock:
        _families.pop(name, None)


def families() -> tuple[Family, ...]:
    """Every registered family, in the order they are tried."""
    with _lock:
        ordered = list(_families.values())
    return tuple(sorted(ordered, key=lambda f: -f.priority))  # sorted() is stable


def get_family(name: str) -> Family:
    """The family called ``name``; a :class:`KeyError` naming the registered ones if none is."""
    with _lock:
        family = _families.get(name)
    if family is None:
        known = ", ".join(f.name for f in families())
        raise KeyError(f"no model family called {name!r}; registered: {known}")
    return family


def family_for_state(state: Mapping[str, torch.Tensor]) -> Family | None:
    """The first family that recognises ``state`` (keys without wrapper prefixes), or None."""
    return next((f for f in families() if f.recognise(state)), None)


def family_for_folder(path: Path) -> Family | None:
    """The first family that recognises the folder ``path`` as one of its models (and reads
    such folders: it has a ``load_folder``), or None."""
    return next((f for f in families() if f.recognise_folder is not None and f.load_folder is not None
                 and f.recognise_folder(path)), None)  # fmt: skip


def family_for_module(module: nn.Module) -> Family | None:
    """The family whose type ``module`` is, or None for a module no family owns."""
    return next((f for f in families() if f.owns_module(module)), None)


def family_for_entry(entry: ModelEntry) -> Family:
    """The family that builds catalog entry ``entry`` (by the part of its ``architecture``
    before the colon); a :class:`WeightsError` when no registered family can."""
    name = entry.architecture.split(":", 1)[0]
    try:
        family = get_family(name)
    except KeyError:
        family = None
    if family is None or family.build_entry is None:
        known = ", ".join(f.name for f in families() if f.build_entry is not None)
        raise WeightsError(
            f"{entry.display_name}: its architecture {entry.architecture!r} is not one this app can "
            f"build (model families: {known})"
        )
    return family


def expectations() -> str:
    """What the registered families look for in a state dict, in words:
    ``"conv_proj.weight and class_token (torchvision) or … (minimal ViT)"``."""
    return " or ".join(f"{f.expects} ({f.title})" for f in families())


# -- families that build a TokenViT ----------------------------------------------------------


def build_token_vit(cfg: TokenViTConfig, state: Mapping[str, torch.Tensor], name: str) -> Built:
    """A :class:`.tokenvit.TokenViT` for ``cfg`` with ``state`` (already in its parameter
    names) loaded exactly; the file must hold what ``cfg`` describes before anything is
    allocated (:func:`require_fits`)."""
    require_fits(name, parameter_count(cfg), state)
    module = TokenViT(cfg)
    load_exactly(module, state, name)
    return Built(module, cfg.image_size, cfg.patch_size)


def _token_vit_resize(module: nn.Module, grid: tuple[int, int]) -> None:
    module.set_grid(grid)


#: The :class:`Family` hooks every family that builds a :class:`.tokenvit.TokenViT` shares:
#: pass as ``register_module(globals(), …, **TOKEN_VIT_HOOKS)``.
TOKEN_VIT_HOOKS: dict[str, Any] = {
    "num_classes": lambda module: int(module.num_classes),
    "owns_module": lambda module: isinstance(module, TokenViT),
    "attention_modules": lambda module: module.attention_modules(),
    "resize": _token_vit_resize,
    "embed_tokens": lambda module, x: module.embed(x),
    "encoder_blocks": lambda module: list(module.blocks),
    "classify_tokens": lambda module, tokens: module.classify_tokens(tokens),
    "gradcam_layer": lambda module, index: module.blocks[index].norm1,
}


# -- shape helpers for builders -------------------------------------------------------------


def heads_for(width: int, config: Mapping[str, Any], name: str) -> int:
    """Attention heads: ``num_heads`` from the config (a whole number of at least 1: 0 is an
    error, not "the default"), else the standard count for the width, else one per 64
    channels; refused when it does not divide the width."""
    given = config.get("num_heads")
    if given is None:
        heads = STANDARD_HEADS.get(width) or max(1, width // 64)
    elif isinstance(given, bool) or not isinstance(given, int):
        raise CheckpointError(f"{name}: num_heads must be a whole number, not {given!r:.40}")
    elif given < 1:
        raise CheckpointError(f"{name}: num_heads must be at least 1, not {given}")
    else:
        heads = given
    if width % heads:
        raise CheckpointError(f"{name}: width {width} is not divisible by {heads} attention heads")
    return heads


def config_flag(config: Mapping[str, Any], key: str, default: bool, name: str) -> bool:
    """``config[key]`` as a real JSON boolean (``"false"`` would otherwise read as true)."""
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise CheckpointError(f"{name}: {key} must be true or false (a JSON boolean), not {value!r:.40}")
    return value


def config_number(config: Mapping[str, Any], key: str, default: float, low: float, high: float,
                  name: str) -> float:  # fmt: skip
    """``config[key]`` as a finite number within ``low``…``high``."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise CheckpointError(f"{name}: {key} must be a number from {low:g} to {high:g}, not {value!r:.40}")
    return float(value)


def require_fits(name: str, params: int, state: Mapping[str, torch.Tensor]) -> None:
    """Before a builder allocates its module: ``params`` (what the shapes and layer names
    describe, counting at least the weight matrices) must be held by the file (it is loaded
    exactly, so a file that holds less cannot fit: say so without building a model that may
    not fit in memory), and within the parameter cap (:func:`.safe_files.require_param_budget`)."""
    held = sum(t.numel() for t in state.values())
    if params > held:
        raise CheckpointError(
            f"{name}: does not fit the architecture its shapes and layer names describe: that needs "
            f"{params:,} parameters, the file holds {held:,} values (weights missing or of the wrong shape)"
        )
    require_param_budget(params, name)


def square_grid(n_tokens: int, name: str) -> int:
    """The side of the square patch grid that ``n_tokens`` position embeddings form."""
    if n_tokens < 1:
        raise CheckpointError(f"{name}: its position embeddings hold no patch positions")
    grid = math.isqrt(n_tokens)
    if grid * grid != n_tokens:
        raise CheckpointError(f"{name}: {n_tokens} position embeddings do not form a square patch grid")
    return grid


def require_positive(name: str, **dims: int) -> None:
    """Refuse a file whose tensor shapes give a zero-sized model (no classes, no width…)."""
    bad = [f"{k.replace('_', ' ')} {v}" for k, v in dims.items() if v < 1]
    if bad:
        raise CheckpointError(f"{name}: its tensor shapes give an empty model ({', '.join(bad)})")


def tensor_of_rank(state: Mapping[str, torch.Tensor], key: str, ndim: int, name: str) -> torch.Tensor:
    """``state[key]``, refused unless it has ``ndim`` dimensions."""
    t = state[key]
    if t.ndim != ndim:
        raise CheckpointError(f"{name}: {key} has {t.ndim} dimensions, expected {ndim}")
    return t


def load_exactly(module: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """Load ``state`` into ``module``, refusing missing, unexpected or wrongly shaped tensors
    with one sentence that names the first few (BatchNorm's ``num_batches_tracked`` may be
    absent)."""
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
    module.load_state_dict(dict(state), strict=False)
