"""The model catalog: weights as data.

Every entry carries what the app needs to know about a model without building it: sizes,
patch grid, accuracy, file size, GFLOPs, download URL and hash, preprocessing and labels.
The torchvision entries are read from torchvision's own weight enums (``meta`` and
``transforms()``), so nothing about 224 px, 16-px patches or ImageNet statistics is
written here.  The DeiT entries (facebookresearch/deit's published weights, built by the
timm family) are written out in :data:`DEIT` from the DeiT paper and repository.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .defaults import DEFAULT_IMAGENET_ID, DEMO_ID  # noqa: F401 (re-exported: defined once, torch-free)
from .errors import ModelNotFoundError
from .preprocess import Preprocessing

#: torchvision builders whose weights we list, in menu order.
TORCHVISION_VITS: tuple[str, ...] = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")

_WEIGHT_SUFFIX = {
    "IMAGENET1K_V1": ("", "ImageNet-1k"),
    "IMAGENET1K_SWAG_E2E_V1": ("-swag-e2e", "SWAG"),
    "IMAGENET1K_SWAG_LINEAR_V1": ("-swag-linear", "SWAG"),
}


@dataclass(frozen=True)
class ModelEntry:
    id: str
    display_name: str
    group: str  # "Demo", "ImageNet-1k", "SWAG", "Test"
    #: A registered model family's name (:mod:`.architectures`), then ":" and the family's own
    #: builder name where it needs one: "torchvision:vit_b_16", "minivit".
    architecture: str
    params: int
    preprocessing: Preprocessing
    labels: tuple[str, ...] = field(repr=False)
    acc1: float | None = None
    acc5: float | None = None
    gflops: float | None = None
    file_size_mb: float | None = None
    url: str | None = None  # None: shipped inside the package
    sha256: str | None = None  # full hex digest or a prefix of it (torchvision publishes 8)
    filename: str | None = None
    weights_name: str | None = None  # torchvision enum member, e.g. IMAGENET1K_SWAG_E2E_V1
    license: str | None = None
    aliases: tuple[str, ...] = ()
    #: A sentence shown with the entry in menus and listings (where the weights come from).
    note: str | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    @property
    def patch_size(self) -> int:
        return self.preprocessing.patch_size

    @property
    def patch_grid(self) -> tuple[int, int]:
        return self.preprocessing.patch_grid

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def downloadable(self) -> bool:
        return self.url is not None

    def summary(self) -> str:
        """One line for menus: parameters, input size, file size, accuracy."""
        h, w = self.input_size
        bits = [f"{self.params / 1e6:.1f}M params", f"{w} px" if w == h else f"{w}×{h} px"]
        if self.file_size_mb is not None:
            bits.append(
                f"{self.file_size_mb:.0f} MB" if self.file_size_mb >= 10 else f"{self.file_size_mb:.1f} MB"
            )
        if self.acc1 is not None:
            bits.append(f"acc@1 {self.acc1:.1f}%")
        return ", ".join(bits)

    def to_dict(self, downloaded: bool | None = None) -> dict:
        rows, cols = self.patch_grid
        h, w = self.input_size
        d = {
            "id": self.id,
            "display_name": self.display_name,
            "group": self.group,
            "architecture": self.architecture,
            "params": self.params,
            "input_size": [w, h] if w != h else w,
            "patch_size": self.patch_size,
            "patch_grid": [rows, cols],
            "num_classes": self.num_classes,
            "acc1": self.acc1,
            "acc5": self.acc5,
            "gflops": self.gflops,
            "file_size_mb": self.file_size_mb,
            "url": self.url,
            "sha256": self.sha256,
            "filename": self.filename,
            "preprocessing": self.preprocessing.to_dict(),
            "note": self.note,
        }
        if downloaded is not None:
            d["downloaded"] = downloaded
        return d


def _interp_name(mode) -> str:
    return str(getattr(mode, "value", mode)).lower()


def _torchvision_entries() -> list[ModelEntry]:
    from torchvision import models

    entries: list[ModelEntry] = []
    for builder in TORCHVISION_VITS:
        weights_enum = models.get_model_weights(builder)
        patch = int(builder.rsplit("_", 1)[1])
        base = "ViT-" + builder.split("_")[1].upper() + "/" + str(patch)
        for w in weights_enum:
            if w.name not in _WEIGHT_SUFFIX:
                continue
            suffix, group = _WEIGHT_SUFFIX[w.name]
            meta = w.meta
            t = w.transforms()
            crop = list(t.crop_size)
            crop_h, crop_w = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
            resize = list(t.resize_size)
            pre = Preprocessing(
                input_size=(crop_h, crop_w),
                patch_size=patch,
                mean=tuple(float(v) for v in t.mean),
                std=tuple(float(v) for v in t.std),
                mode="resize_crop",
                resize_size=int(resize[0]),
                interpolation=_interp_name(t.interpolation),
            )
            metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
            kind = {"": "", "-swag-e2e": " SWAG E2E", "-swag-linear": " SWAG linear"}[suffix]
            filename = w.url.rsplit("/", 1)[1]
            entries.append(
                ModelEntry(
                    id=builder.replace("_", "-") + suffix,
                    display_name=f"{base}{kind} ({crop_w} px)",
                    group=group,
                    architecture=f"torchvision:{builder}",
                    params=int(meta["num_params"]),
                    preprocessing=pre,
                    labels=tuple(meta["categories"]),
                    acc1=metrics.get("acc@1"),
                    acc5=metrics.get("acc@5"),
                    gflops=meta.get("_ops"),
                    file_size_mb=meta.get("_file_size"),
                    url=w.url,
                    sha256=_hash_prefix(filename),
                    filename=filename,
                    weights_name=w.name,
                    license=meta.get("license"),
                    aliases=(f"{builder}.{w.name}",) + ((builder,) if not suffix else ()),
                )
            )
    return entries


def _hash_prefix(filename: str) -> str | None:
    """torchvision's file names end in the first hex digits of the file's SHA-256."""
    stem = filename.rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail):
        return tail
    return None


#: DeiT (Touvron et al. 2021), facebookresearch/deit's ImageNet-1k weights: id, name, timm
#: builder, parameters, acc@1, acc@5, GFLOPs, file size (MB), file name (ending in the first
#: 8 hex digits of its SHA-256).
DEIT: tuple[tuple[str, str, str, int, float, float, float, float, str], ...] = (
    ("deit-ti-16", "DeiT-Ti/16", "deit_tiny_patch16_224", 5_717_416, 72.2, 91.1, 1.3, 21.9,
     "deit_tiny_patch16_224-a1311bcf.pth"),
    ("deit-s-16", "DeiT-S/16", "deit_small_patch16_224", 22_050_664, 79.8, 95.0, 4.6, 84.2,
     "deit_small_patch16_224-cd65a155.pth"),
    ("deit-ti-16-distilled", "DeiT-Ti/16 distilled", "deit_tiny_distilled_patch16_224", 5_910_800, 74.5,
     91.9, 1.3, 22.6, "deit_tiny_distilled_patch16_224-b40b3cf7.pth"),
    ("deit-s-16-distilled", "DeiT-S/16 distilled", "deit_small_distilled_patch16_224", 22_436_432, 81.2,
     95.4, 4.7, 85.6, "deit_small_distilled_patch16_224-649709d9.pth"),
)  # fmt: skip
DEIT_URL = "https://dl.fbaipublicfiles.com/deit/"
DEIT_NOTE = (
    "facebookresearch/deit weights, checked against the 8-digit hash prefix they publish; "
    "the full SHA-256 is recorded on first download and checked from then on"
)


def _deit_entries(labels: tuple[str, ...]) -> list[ModelEntry]:
    """The DeiT entries with ``labels`` (ImageNet-1k's, as torchvision names them).  DeiT's
    evaluation: the shorter side to 256 px (crop ratio 0.875), bicubic, 224-px centre crop,
    ImageNet mean and standard deviation."""
    pre = Preprocessing(input_size=(224, 224), patch_size=16, mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225), mode="resize_crop", resize_size=256,
                        interpolation="bicubic")  # fmt: skip
    return [
        ModelEntry(
            id=eid,
            display_name=f"{title} (224 px)",
            group="DeiT",
            architecture=f"timm:{builder}",
            params=params,
            preprocessing=pre,
            labels=labels,
            acc1=acc1,
            acc5=acc5,
            gflops=gflops,
            file_size_mb=size,
            url=DEIT_URL + filename,
            sha256=_hash_prefix(filename),
            filename=filename,
            license="Apache-2.0",
            aliases=(builder,),
            note=DEIT_NOTE,
        )  # fmt: skip
        for eid, title, builder, params, acc1, acc5, gflops, size, filename in DEIT
    ]


@functools.lru_cache(maxsize=1)
def _demo_entry() -> ModelEntry:
    from .demo.model import CONFIG, PREPROCESSING, WEIGHTS_FILE, weights_resource
    from .demo.shapes import CLASSES

    res = weights_resource()
    try:
        size_mb = res.stat().st_size / 1e6 if isinstance(res, Path) else None
    except OSError:
        size_mb = None
    if size_mb is None:
        try:
            size_mb = len(res.read_bytes()) / 1e6
        except OSError:
            size_mb = None
    return ModelEntry(
        id=DEMO_ID,
        display_name=f"Demo: shapes ViT ({CONFIG.image_size} px, offline)",
        group="Demo",
        architecture="minivit",
        params=_minivit_params(CONFIG),
        preprocessing=PREPROCESSING,
        labels=CLASSES,
        acc1=_demo_accuracy(),
        file_size_mb=size_mb,
        filename=WEIGHTS_FILE,
    )


def _minivit_params(cfg) -> int:
    import torch

    from .minivit import MiniViT

    # Built on the CPU (under a million parameters, a few ms): the meta device's reference
    # kernels would import torch._dynamo, 1.6 s before the first prediction.
    with torch.no_grad():
        model = MiniViT(cfg)
    return sum(p.numel() for p in model.parameters())


def _demo_accuracy() -> float | None:
    from .demo.model import resource_dir

    try:
        data = json.loads(resource_dir().joinpath("demo_shapes.metrics.json").read_text())
        return float(data["accuracy"]) * 100
    except (OSError, ValueError, KeyError, TypeError):
        return None


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[ModelEntry, ...]:
    torchvision = _torchvision_entries()
    imagenet = next(e.labels for e in torchvision if e.group == "ImageNet-1k")
    return (_demo_entry(), *torchvision, *_deit_entries(imagenet))


_extra: list[ModelEntry] = []


def register(entry: ModelEntry) -> None:
    """Add an entry (tests use this for a catalog entry served from 127.0.0.1)."""
    unregister(entry.id)
    _extra.append(entry)


def unregister(model_id: str) -> None:
    _extra[:] = [e for e in _extra if e.id != model_id]


def entries() -> list[ModelEntry]:
    return [*_builtin(), *_extra]


def get(model_id: str) -> ModelEntry:
    """The entry whose id or alias is ``model_id`` (or its id with ``-`` for ``_``, in lower
    case); a :class:`ModelNotFoundError` naming the known ids otherwise."""
    key = model_id.strip()
    if key == DEMO_ID:
        # The start-up model: found without building the torchvision part of the catalog,
        # which imports torchvision (1.3 s of the first prediction here).
        return _demo_entry()
    for e in entries():
        if key == e.id or key in e.aliases:
            return e
    low = key.lower().replace("_", "-")
    for e in entries():
        if low == e.id:
            return e
    known = ", ".join(e.id for e in entries())
    raise ModelNotFoundError(f"no model called {model_id!r}; known models: {known}")


def with_base_url(entry: ModelEntry, base: str | None) -> ModelEntry:
    """The entry with its download URL moved under ``base`` (mirrors, air-gapped sites)."""
    if not base or not entry.url:
        return entry
    return replace(entry, url=base.rstrip("/") + "/" + entry.url.rsplit("/", 1)[1])


def weights_base_url() -> str | None:
    return os.environ.get("VIT_DESKTOP_WEIGHTS_URL") or None


def plain_http_notice(base: str | None = None) -> str | None:
    """One line for the person when the weights mirror (``VIT_DESKTOP_WEIGHTS_URL``, or
    ``base``) is plain http; None otherwise.  A warning, not an error: the download is still
    checked against the published hash, but torchvision publishes only 8 hex digits of it."""
    base = weights_base_url() if base is None else base
    scheme, sep, rest = (base or "").strip().partition("://")
    if not sep or scheme.lower() != "http":
        return None
    host = rest.split("/", 1)[0].rpartition("@")[2]  # never a user name or password
    return (
        f"warning: VIT_DESKTOP_WEIGHTS_URL is plain http (http://{host}/): weights fetched from it "
        "can be swapped on the way and are checked only against an 8-digit hash prefix; use https"
    )


def group_order(all_entries: Sequence[ModelEntry]) -> list[tuple[str, list[ModelEntry]]]:
    order: dict[str, list[ModelEntry]] = {}
    for e in all_entries:
        order.setdefault(e.group, []).append(e)
    return list(order.items())
