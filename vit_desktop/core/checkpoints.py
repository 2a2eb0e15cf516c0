"""Local checkpoints: read files safely, then build the model through the family registry.

Only ``torch.load(..., weights_only=True)`` (:func:`safe_torch_load`, the app's one call of
it) and safetensors are used, so a checkpoint can never run code.  This module reads the
file (state dicts inside wrappers, ``module.`` prefixes) within a memory budget (what the
file declares is checked against its size before anything large is allocated, and the
parameter count is capped: :mod:`.safe_files`; the readers live in :mod:`.state_files`, which
the families that read model folders share), takes the labels and settings beside it
(:mod:`.sidecars`) and checks the result (finite weights, one trial forward pass); which
architecture the tensors are, and how it is built, is the registered families' business
(:mod:`.architectures`, :mod:`.families`).  Running out of memory anywhere in this is one
:class:`CheckpointError` too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import architectures, families, sidecars  # noqa: F401 (importing families registers the built-in ones)
from .errors import CheckpointError
from .preprocess import MAX_INPUT_SIDE, Preprocessing
from .safe_files import is_out_of_memory, require_param_budget
from .sidecars import read_labels
from .state_files import SafeLoadError, read_state_dict, safe_torch_load, state_dict_of, strip_prefixes
from .text import brief, display, short_name

__all__ = ["BuiltModel", "SafeLoadError", "load_checkpoint", "read_state_dict", "safe_torch_load",
           "state_dict_of", "strip_prefixes"]  # fmt: skip


@dataclass(frozen=True)
class BuiltModel:
    """An eval-mode model built from a checkpoint, with what it needs to classify."""

    module: nn.Module
    family: str  # the registered family's name: "torchvision", "minivit", …
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    name: str


def load_checkpoint(path: str | os.PathLike[str], display_name: str | None = None,
                    labels: str | os.PathLike[str] | None = None) -> BuiltModel:  # fmt: skip
    """Build an eval-mode model from a local checkpoint file (``labels``: an optional
    labels file instead of the ones next to it).

    The registered family that recognises the tensors builds the model; the weights are
    then checked (all finite, a trial forward pass that stays finite) so that a broken file
    is refused here in one sentence rather than giving NaN for every image later.  Running
    out of memory at any step is a :class:`CheckpointError` as well."""
    p = Path(path)
    try:
        return _load(p, display_name, labels)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
    raise CheckpointError(f"{short_name(p)}: not enough memory to load this model")


#: The weights files of a model folder: opening one of them opens its folder (config, labels).
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _folder_of(p: Path) -> Path | None:
    """The model folder ``p`` names: ``p`` itself when it is a folder, its parent when ``p`` is
    a folder's weights file (:data:`FOLDER_WEIGHTS`) and the parent is a model folder."""
    if p.is_dir():
        return p
    if p.name in FOLDER_WEIGHTS and architectures.family_for_folder(p.parent) is not None:
        return p.parent
    return None


def _read(p: Path, name: str) -> tuple[architectures.Family, architectures.FolderModel, dict[str, str]]:
    """The family, tensors and settings of the file or model folder ``p``."""
    folder = _folder_of(p)
    if folder is not None:
        family = architectures.family_for_folder(folder)
        if family is None:
            raise CheckpointError(
                f"{name}: is a folder, but not a model folder this app knows (expected config.json with "
                "model.safetensors, as Hugging Face and timm save them); open a checkpoint file instead"
            )
        assert family.load_folder is not None  # family_for_folder only returns readers of folders
        return family, family.load_folder(folder, short_name(folder)), {}
    state, meta = read_state_dict(p)
    state = strip_prefixes(state)
    cfg = sidecars.config_overrides(p, meta)
    family = architectures.family_for_state(state)
    if family is None:
        found = display(", ".join(sorted(state)[:5])) + (" …" if len(state) > 5 else "")
        raise CheckpointError(
            f"{name}: not a Vision Transformer this app knows: expected {architectures.expectations()}; "
            f"found {found}"
        )
    return family, architectures.FolderModel(state, cfg), meta


def _load(p: Path, display_name: str | None, labels: str | os.PathLike[str] | None) -> BuiltModel:
    name = short_name(p)
    family, contents, meta = _read(p, name)
    state, cfg = contents.state, dict(contents.config)
    contents = architectures.FolderModel(
        {}, {}, contents.labels, contents.preprocessing
    )  # let go of the tensors
    try:
        built = family.build(state, cfg, name)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, ArithmeticError, MemoryError) as exc:
        if is_out_of_memory(exc):
            raise CheckpointError(f"{name}: not enough memory to build this model") from None
        raise CheckpointError(
            f"{name}: could not build the model ({brief(str(exc) or type(exc).__name__)})"
        ) from None
    del state  # the model holds its own copy of the weights
    model = built.module
    require_param_budget(sum(t.numel() for t in model.parameters()), name)
    (bh, bw), side = built.input_size, MAX_INPUT_SIDE
    if not (1 <= bh <= side and 1 <= bw <= side):
        raise CheckpointError(f"{name}: its weights are for {bw}×{bh}-px inputs, above the {side}-px limit")
    _refuse_non_finite(model, name)
    num_classes = family.num_classes(model)
    names = read_labels(p, num_classes, meta, Path(labels) if labels else None)
    if names is None and contents.labels is not None:
        if len(contents.labels) != num_classes:
            raise CheckpointError(
                f"{name}: its config names {len(contents.labels)} classes but the model predicts {num_classes}"
            )
        names = contents.labels
    default_pre = contents.preprocessing or family.default_preprocessing(built.input_size, built.patch_size)
    try:
        pre = sidecars.preprocessing(cfg, default_pre)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{name}: bad preprocessing settings ({brief(str(exc) or type(exc).__name__)})"
        ) from None
    if pre.input_size != built.input_size or pre.patch_size != built.patch_size:
        (h, w) = pre.input_size
        raise CheckpointError(
            f"{name}: its preprocessing asks for {w}×{h} px in {pre.patch_size}-px patches, but the "
            f"weights are for {bw}×{bh} px in {built.patch_size}-px patches"
        )
    model.eval()
    _probe(model, pre, name)
    return BuiltModel(
        model, family.name, pre, names or family.default_labels(num_classes), display_name or p.stem
    )


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
    except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError, MemoryError) as exc:
        if is_out_of_memory(exc):
            raise CheckpointError(f"{name}: not enough memory to run this model") from None
        raise CheckpointError(
            f"{name}: the model fails on a test image ({brief(str(exc) or type(exc).__name__)})"
        ) from None
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(
            f"{name}: the model's outputs overflow to NaN or infinity on a test image (weights far too "
            "large or damaged), so it cannot give meaningful predictions"
        )


#: Values checked at a time by :func:`_refuse_non_finite` (its memory stays small for any model).
FINITE_CHUNK = 1 << 22


def _refuse_non_finite(model: nn.Module, name: str) -> None:
    """A weight that is NaN or infinite makes every prediction NaN: say so at load time.
    Checked in chunks, so a huge weight needs no second copy's worth of memory."""
    with torch.no_grad():
        for key, p in model.named_parameters():
            if not p.is_floating_point():
                continue
            flat = p.detach().reshape(-1)
            try:
                finite = all(bool(torch.isfinite(flat[i : i + FINITE_CHUNK]).all())
                             for i in range(0, flat.numel(), FINITE_CHUNK))  # fmt: skip
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                raise CheckpointError(f"{name}: not enough memory to check this model's weights") from None
            if not finite:
                raise CheckpointError(
                    f"{name}: {key} holds NaN or infinite values, so the model cannot give "
                    "meaningful predictions (a damaged or diverged checkpoint)"
                )
