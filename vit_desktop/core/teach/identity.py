"""Which backbone a classifier was taught on, and how to build it again.

A catalog model is named by its id and the SHA-256 of its weights file (shipped or
downloaded): opening the classifier later builds it from the catalog (downloading the weights
if they are missing, like any catalog model) and checks that hash.  Any other model (a
checkpoint, a model folder, ``hf:…``) is embedded: its tensors go into the classifier's file
with :func:`architecture` — the network's settings — so that it is rebuilt without the
original file, and it is named by the SHA-256 of those tensors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import catalog, weights
from ..errors import CheckpointError, VitDesktopError
from ..minivit import MiniViT, MiniViTConfig
from ..tokenvit import TokenViT, TokenViTConfig


@dataclass(frozen=True)
class BackboneId:
    model_id: str  # a catalog id, or what the backbone was opened from
    name: str
    catalog: bool  # True: rebuilt from the catalog; False: its tensors are embedded
    sha256: str

    def to_dict(self) -> dict:
        return {"id": self.model_id, "name": self.name, "catalog": self.catalog, "sha256": self.sha256}

    def cache_key(self, module: nn.Module) -> str:
        """What names the network for the feature cache: the weights' hash, and the catalog
        id or (for any other model) its architecture's settings, which tensors alone do not
        give (heads, LayerNorm epsilon)."""
        if self.catalog:
            return f"{self.model_id}|{self.sha256}"
        try:
            shape = json.dumps(architecture(module), sort_keys=True)
        except CheckpointError:
            shape = type(module).__name__
        return f"{self.sha256}|{shape}"

    @classmethod
    def from_dict(cls, obj: dict) -> BackboneId:
        try:
            return cls(str(obj["id"]), str(obj["name"]), bool(obj["catalog"]), str(obj["sha256"]))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"its backbone record is incomplete ({exc})") from None


def catalog_weights_file(entry: catalog.ModelEntry) -> Path:
    """Where a catalog entry's weights file is: in the package (shipped) or in the cache."""
    if entry.url is None:
        with resources.as_file(resources.files("vit_desktop.resources").joinpath(entry.filename or "")) as p:
            return Path(p)
    return weights.cached_path(entry)


def catalog_weights_sha256(entry: catalog.ModelEntry) -> str | None:
    """The full SHA-256 of a catalog entry's weights file (None: not on disk).  For a
    downloaded file, the digest :func:`.weights.ensure` verified and recorded when the model
    was built (it hashes the file on every build), not a second pass over the file."""
    path = catalog_weights_file(entry)
    if not path.is_file():
        return None
    if entry.url is not None:
        recorded = weights.recorded_sha256(path.name, path.parent)
        if recorded is not None:
            return recorded
    return weights.sha256_file(path)


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``state``'s tensors (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def backbone_identity(clf) -> BackboneId:
    """The identity of ``clf``'s model (a :class:`.classifier.Classifier`)."""
    try:
        entry = catalog.get(clf.model_id)
    except VitDesktopError:
        entry = None
    digest = catalog_weights_sha256(entry) if entry is not None and entry.filename else None
    if digest is not None:
        return BackboneId(entry.id, entry.display_name, True, digest)
    return BackboneId(clf.model_id, clf.display_name, False, tensors_sha256(clf.module.state_dict()))


def architecture(module: nn.Module) -> dict:
    """The settings that rebuild ``module``'s network (``{"kind": …, …}``)."""
    if isinstance(module, TokenViT):
        return {"kind": "tokenvit", **asdict(module.cfg)}
    if isinstance(module, MiniViT):
        return {"kind": "minivit", **asdict(module.config)}
    vt = _torchvision_vit()
    if vt is not None and isinstance(module, vt.VisionTransformer):
        layer = module.encoder.layers[0]
        pre = getattr(module.heads, "pre_logits", None)
        return {"kind": "torchvision", "image_size": module.image_size, "patch_size": module.patch_size,
                "num_layers": len(module.encoder.layers), "num_heads": layer.num_heads,
                "hidden_dim": module.hidden_dim, "mlp_dim": module.mlp_dim, "num_classes": module.num_classes,
                "representation_size": pre.out_features if pre is not None else None}  # fmt: skip
    raise CheckpointError(f"a {type(module).__name__} backbone cannot be embedded in a classifier file")


def _torchvision_vit():
    import sys

    return sys.modules.get("torchvision.models.vision_transformer")


def _config(cls, obj: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(obj) - names
    if unknown:
        raise CheckpointError(f"its backbone settings name unknown fields: {', '.join(sorted(unknown))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in obj.items()})


def rebuild(arch: dict) -> nn.Module:
    """An untrained network of the shape :func:`architecture` described."""
    arch = dict(arch)
    kind = arch.pop("kind", None)
    try:
        if kind == "tokenvit":
            return TokenViT(_config(TokenViTConfig, arch))
        if kind == "minivit":
            return MiniViT(_config(MiniViTConfig, arch))
        if kind == "torchvision":
            from torchvision.models.vision_transformer import VisionTransformer

            return VisionTransformer(**arch)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"its backbone settings are not valid ({exc})") from None
    raise CheckpointError(f"its backbone kind {kind!r} is not known")


def to_json(obj) -> str:
    return json.dumps(obj, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else str(v))
