"""A taught classifier's file: safetensors with the head, the fine-tuned blocks (if any), the
labels, the preprocessing and the backbone's identity (and its tensors when it is not a
catalog model), and a training report (JSON) beside it.

Tensors: ``head.weight``, ``head.bias``, ``feature_mean``, ``feature_std``, and
``backbone.NAME`` for the backbone's tensors that are stored (the fine-tuned blocks' of a
catalog backbone; every one of an embedded backbone).  Metadata (strings): ``format`` =
:data:`FORMAT`, ``format_version``, and JSON ``labels``, ``preprocessing``, ``features``,
``backbone``, ``architecture`` (embedded backbones), ``app_version``.

Saving writes a new file next to the target and renames it over: a full disk or a crash
keeps the old file.  Opening never runs code: safetensors only, hashes checked.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ... import __version__
from .. import catalog, sidecars, weights
from ..errors import CheckpointError, VitDesktopError
from ..families.taught import FeatureSpec, TaughtViT
from ..preprocess import Preprocessing
from ..text import display
from .identity import BackboneId, architecture, catalog_weights_sha256, rebuild, tensors_sha256

FORMAT = "vit-desktop-classifier"
FORMAT_VERSION = "1"
REPORT_SUFFIX = ".report.json"


class SaveError(VitDesktopError):
    """The classifier could not be saved (the old file, if any, is kept)."""


def report_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name.removesuffix(".safetensors") + REPORT_SUFFIX)


def _write_all(files: list[tuple[Path, Callable[[str], None]]]) -> None:
    """Each file written to a new file beside its target and forced to disk; only when every
    one is written are they renamed over their targets (the old files stay otherwise)."""
    temps: list[str] = []
    try:
        for target, write in files:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(tmp)
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        for (target, _), tmp in zip(files, temps):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _why(exc: Exception) -> str:
    text = str(exc)
    if getattr(exc, "errno", None) == 28 or "os error 28" in text:
        return "the disk is full"
    if isinstance(exc, OSError):
        return exc.strerror or text
    return " ".join(text.split())


def save(taught, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``taught`` (a :class:`.train.Taught`) to ``path`` and its report beside it."""
    target = Path(path)
    if target.suffix.lower() != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    model: TaughtViT = taught.module
    ident: BackboneId = taught.backbone
    tensors = {
        "head.weight": model.head.weight,
        "head.bias": model.head.bias,
        "feature_mean": model.feature_mean,
        "feature_std": model.feature_std,
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "labels": json.dumps(list(taught.classes)),
        "preprocessing": json.dumps(taught.preprocessing.to_dict()),
        "features": json.dumps(model.spec.to_dict()),
        "backbone": json.dumps(ident.to_dict()),
        "app_version": __version__,
    }
    backbone = model.backbone.state_dict()
    if ident.catalog:
        stored = _block_names(model, taught.tuned_blocks)
    else:
        stored = set(backbone)
        meta["architecture"] = json.dumps(architecture(model.backbone))
        # What is embedded (fine-tuned blocks included), checked when the file is opened.
        meta["embedded_sha256"] = tensors_sha256({k: backbone[k].float() for k in stored})
    tensors |= {f"backbone.{k}": backbone[k] for k in sorted(stored)}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    report = json.dumps(taught.report(), indent=2)
    rp = report_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_all([(target, lambda tmp: save_file(tensors, tmp, metadata=meta)),
                    (rp, lambda tmp: Path(tmp).write_text(report + "\n", encoding="utf-8"))])  # fmt: skip
    except (OSError, SafetensorError) as exc:
        raise SaveError(
            f"{display(str(target))} could not be saved: {_why(exc)} (any old file is kept)"
        ) from None
    return target, rp


def _block_names(model: TaughtViT, indices) -> set[str]:
    """The backbone's state-dict names of the blocks ``indices``."""
    wanted = {id(model.blocks[i].block) for i in indices}
    names = set()
    for prefix, mod in model.backbone.named_modules():
        if id(mod) in wanted:
            names |= {f"{prefix}.{k}" for k in mod.state_dict()}
    return names


def metadata(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The file's metadata when it is a taught classifier's file, else None (cheap: the
    header only)."""
    p = Path(path)
    if p.suffix.lower() != ".safetensors" or not p.is_file():
        return None
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    return meta if meta.get("format") == FORMAT else None


def missing_backbone(path: str | os.PathLike[str]) -> catalog.ModelEntry | None:
    """The catalog entry of a classifier file's backbone when its weights are not on disk
    (opening the file would download them), else None (cheap: the header only)."""
    meta = metadata(path)
    if meta is None:
        return None
    try:
        ident = BackboneId.from_dict(json.loads(meta.get("backbone", "")))
        entry = catalog.get(ident.model_id) if ident.catalog else None
    except (ValueError, VitDesktopError):
        return None
    return entry if entry is not None and not weights.is_downloaded(entry) else None


def _json(meta: dict[str, str], key: str, name: str):
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{name}: its {key} record is missing or broken ({exc})") from None


def load(path: str | os.PathLike[str], build_entry: Callable, progress=None, cancel=None,
         allow_download: bool = True) -> tuple[TaughtViT, Preprocessing, tuple[str, ...], str]:  # fmt: skip
    """The classifier in ``path`` (module, preprocessing, labels, name): its backbone built
    (``build_entry(entry, pretrained, progress, cancel, allow_download)`` for a catalog one —
    :func:`.loading.build_entry_module`, which downloads missing weights when allowed — and
    checked against the recorded SHA-256; or from the embedded tensors), the stored tensors
    loaded exactly."""
    p = Path(path)
    name = p.name
    meta = metadata(p)
    if meta is None:
        raise CheckpointError(f"{name}: not a classifier file written by vit-desktop train")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{name}: written by a newer version (format {meta.get('format_version')})")
    labels = tuple(str(v) for v in _json(meta, "labels", name))
    ident = BackboneId.from_dict(_json(meta, "backbone", name))
    spec = FeatureSpec.from_dict(_json(meta, "features", name))
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{name}: could not be read ({exc})") from None
    stored = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if ident.catalog:
        entry = catalog.get(ident.model_id)
        backbone = build_entry(entry, True, progress, cancel, allow_download)
        if catalog_weights_sha256(entry) != ident.sha256:
            raise CheckpointError(f"{name}: the weights of {entry.display_name} on disk are not the ones it was "
                                  "taught on (their SHA-256 differs)")  # fmt: skip
        default_pre = entry.preprocessing
    else:
        backbone = rebuild(_json(meta, "architecture", name))
        default_pre = None
    own = backbone.state_dict()
    bad = [k for k, v in stored.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{name}: the stored tensor backbone.{bad[0]} does not fit the backbone")
    if not ident.catalog:
        missing = sorted(set(own) - set(stored))
        if missing:
            raise CheckpointError(f"{name}: the embedded backbone lacks backbone.{missing[0]}")
        if tensors_sha256(stored) != meta.get("embedded_sha256"):
            raise CheckpointError(f"{name}: its embedded backbone does not match its recorded SHA-256")
    backbone.load_state_dict(stored, strict=False)
    model = TaughtViT(backbone.eval(), spec, len(labels))
    head = {k: state.get(k) for k in ("head.weight", "head.bias", "feature_mean", "feature_std")}
    for k, v in head.items():
        if v is None:
            raise CheckpointError(f"{name}: missing tensor {k}")
    try:
        model.head.load_state_dict({"weight": head["head.weight"], "bias": head["head.bias"]})
    except RuntimeError as exc:
        raise CheckpointError(
            f"{name}: its head does not fit ({str(exc).splitlines()[-1].strip()})"
        ) from None
    with torch.no_grad():
        if head["feature_mean"].shape != model.feature_mean.shape:
            raise CheckpointError(f"{name}: its feature statistics do not fit the backbone")
        model.feature_mean.copy_(head["feature_mean"])
        model.feature_std.copy_(head["feature_std"])
    pre_obj = _json(meta, "preprocessing", name)
    try:
        pre = sidecars.preprocessing({"preprocessing": pre_obj}, default_pre or _pre_of(pre_obj))
    except (ValueError, TypeError, KeyError) as exc:  # KeyError: a setting missing from the file
        raise CheckpointError(f"{name}: its preprocessing is not valid ({exc!s})") from None
    return model.eval(), pre, labels, p.name.removesuffix(".safetensors")


def _pre_of(obj: dict) -> Preprocessing:
    return Preprocessing(input_size=tuple(obj["input_size"]), patch_size=obj["patch_size"],
                         mean=tuple(obj["mean"]), std=tuple(obj["std"]))  # fmt: skip
