"""What every benchmark shares: figures, interleaved timing, run sizes, test images, the machine."""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


@dataclass
class Figure:
    key: str
    value: float | None
    unit: str
    target: float | None
    higher_is_better: bool
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.target is None or self.value is None or not math.isfinite(self.value):
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def to_dict(self) -> dict:
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        return {"value": value, "unit": self.unit, "target": self.target, "ok": self.ok}


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does: ``full`` for RESULTS.md, ``quick`` (< 10 minutes
    on 2 cores), ``tiny`` (small models and images: checks that the harness runs)."""

    name: str
    repeats: int  # interleaved repeats of a model-level comparison
    folder_images: int
    folder_repeats: int
    min_mp: float
    max_mp: float
    rss_counts: tuple[int, int]
    agreement_images: int
    startup_runs: int
    slider_after_s: float  # how long the layer slider keeps moving after the result is drawn
    drops: int  # 24 MP drops in the window

    @property
    def tiny(self) -> bool:
        return self.name == "tiny"


FULL = Sizes("full", 30, 64, 3, 0.3, 24.0, (100, 1000), 500, 5, 2.0, 5)
QUICK = Sizes("quick", 8, 64, 2, 0.3, 24.0, (100, 1000), 500, 2, 1.0, 3)
TINY = Sizes("tiny", 2, 6, 1, 0.01, 0.2, (10, 100), 40, 1, 0.2, 1)


def sync(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(sides: Sequence[Callable[[], object]], repeats: int, warmup: int = 1,
                device: torch.device | str = "cpu") -> list[list[float]]:  # fmt: skip
    """Seconds per call of each side, run in rotating order (A B C, B C A, …) so that drift
    and other load hit every side alike."""
    for _ in range(warmup):
        for fn in sides:
            fn()
    times: list[list[float]] = [[] for _ in sides]
    n = len(sides)
    for r in range(repeats):
        for j in range(n):
            i = (r + j) % n
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            sides[i]()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return times


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of the per-repeat ratios: each pair ran back to back, so a burst of load
    elsewhere on the machine skews one pair, not the figure."""
    return statistics.median(a / b for a, b in zip(num, den))


def median_ms(ts: Sequence[float]) -> float:
    return statistics.median(ts) * 1000


def matmul_side(flops: float, tiny: bool = False) -> tuple[Callable[[], None], float]:
    """The machine's fp32 GEMM speed as one side of an interleaved comparison: square
    ``torch.mm`` calls (2048², 256² on tiny runs) doing about ``flops``.  Returns the side
    and the FLOPs one call of it does."""
    n = 256 if tiny else 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    reps = max(1, round(flops / (2 * n**3)))

    def matmul() -> None:
        for _ in range(reps):
            torch.mm(a, b)

    return matmul, 2.0 * n**3 * reps


# -- models ---------------------------------------------------------------------------------------


def torchvision_vit(sizes: Sizes, seed: int = 0) -> nn.Module:
    """ViT-B/16 with random weights (or a tiny ViT), head re-initialised (torchvision's is
    zeros, which would make every logit comparison pass vacuously)."""
    from torchvision.models import VisionTransformer, vit_b_16

    torch.manual_seed(seed)
    if sizes.tiny:
        m = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64,
                              mlp_dim=128, num_classes=10)  # fmt: skip
    else:
        m = vit_b_16(weights=None)
    nn.init.normal_(m.heads.head.weight, std=0.02)
    return m.eval()


def input_size(sizes: Sizes) -> int:
    return 64 if sizes.tiny else 224


def our_classifier(sizes: Sizes, device: str = "cpu", fast: bool = False):
    """Our classifier on the same architecture: the catalog's ViT-B/16 with random weights,
    or the tiny ViT with the same preprocessing rules."""
    from vit_desktop.core.classifier import Classifier, load_classifier
    from vit_desktop.core.preprocess import Preprocessing

    if not sizes.tiny:
        return load_classifier("vit-b-16", device=device, pretrained=False, fast=fast)
    pre = Preprocessing(input_size=(64, 64), patch_size=16, mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225), resize_size=73)  # fmt: skip
    clf = Classifier(torchvision_vit(sizes), pre, [f"c{i}" for i in range(10)], "tiny-vit", "Tiny ViT",
                     torch.device(device))  # fmt: skip
    if fast:
        clf.set_fast(True)
    return clf


def torchvision_transforms(sizes: Sizes):
    """``weights.transforms()`` of ViT-B/16 (no download needed), or its tiny equivalent."""
    from torchvision.models import ViT_B_16_Weights
    from torchvision.transforms._presets import ImageClassification

    if sizes.tiny:
        return ImageClassification(crop_size=64, resize_size=73)
    return ViT_B_16_Weights.IMAGENET1K_V1.transforms()


# -- test images ----------------------------------------------------------------------------------

_ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


def photo_like(w: int, h: int, seed: int) -> Image.Image:
    """A smooth random scene with fine grain: compresses and decodes like a photograph
    (a few bits per pixel), unlike pure noise or flat colour."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "RGB")
    mid = base.resize((max(1, w // 64), max(1, h // 64)), Image.Resampling.BICUBIC)
    detail = rng.integers(0, 256, (max(1, h // 64), max(1, w // 64), 3), dtype=np.uint8)
    mid = Image.blend(mid, Image.fromarray(detail, "RGB"), 0.4)
    img = np.asarray(mid.resize((w, h), Image.Resampling.BILINEAR)).copy()
    tile = rng.normal(0, 9, (256, 256, 3)).astype(np.int16)
    reps = (math.ceil(h / 256), math.ceil(w / 256), 1)
    grain = np.tile(tile, reps)[:h, :w]
    np.clip(img.astype(np.int16) + grain, 0, 255, out=grain)
    return Image.fromarray(grain.astype(np.uint8), "RGB")


def image_set(sizes: Sizes, folder: Path) -> list[Path]:
    """``folder_images`` JPEGs, log-uniform between ``min_mp`` and ``max_mp`` megapixels
    (both ends included), mixed aspect ratios; made once and kept (same seed, same files)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = sizes.folder_images
    mps = np.exp(np.linspace(math.log(sizes.min_mp), math.log(sizes.max_mp), n))
    rng = np.random.default_rng(2026)
    rng.shuffle(mps)
    paths = []
    for i, mp in enumerate(mps):
        aspect = _ASPECTS[i % len(_ASPECTS)]
        w = round(math.sqrt(mp * 1e6 * aspect))
        h = round(mp * 1e6 / w)
        path = folder / f"img{i:03d}_{w}x{h}.jpg"
        if not path.exists():
            tmp = path.with_suffix(".partial")
            photo_like(w, h, seed=i).save(tmp, "JPEG", quality=90)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def large_jpeg(sizes: Sizes, folder: Path) -> Path:
    """The largest image of the set: 24 MP (6000 × 4000) in full runs."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = (600, 400) if sizes.tiny else (6000, 4000)
    path = folder / f"large_{w}x{h}.jpg"
    if not path.exists():
        tmp = path.with_suffix(".partial")
        photo_like(w, h, seed=24).save(tmp, "JPEG", quality=90)
        os.replace(tmp, path)
    return path


def cache_dir(sizes: Sizes) -> Path:
    """Where the test images live between runs (``VIT_DESKTOP_BENCH_CACHE`` overrides)."""
    if sizes.tiny:
        return Path(tempfile.mkdtemp(prefix="vit-bench-tiny-"))
    root = os.environ.get("VIT_DESKTOP_BENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "vit-desktop-bench"
    )
    return Path(root)


# -- the machine ------------------------------------------------------------------------------------


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


@dataclass
class Machine:
    cpu: str = field(default_factory=cpu_model)
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    threads: int = field(default_factory=torch.get_num_threads)
    torch: str = torch.__version__
    python: str = platform.python_version()
    cuda: str | None = field(
        default_factory=lambda: torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    )
    load: tuple[float, float, float] = field(default_factory=lambda: os.getloadavg())

    def line(self) -> str:
        gpu = f", {self.cuda}" if self.cuda else ", no GPU"
        return (f"{self.cpu}, {self.cores} cores, {self.threads} torch threads{gpu}, torch {self.torch}, "
                f"Python {self.python}, load average {self.load[0]:.2f} {self.load[1]:.2f} {self.load[2]:.2f}")  # fmt: skip
