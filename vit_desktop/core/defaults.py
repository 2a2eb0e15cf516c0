"""Choices and defaults both faces share, defined once and free of torch and Qt: the
devices offered, the model ids the app starts with, and how an overlay is drawn."""

from __future__ import annotations

#: Devices a person can pick (``auto``: CUDA, then Apple MPS, then the CPU).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")

#: The shipped demo model (works offline) and the ImageNet model preferred when on disk.
DEMO_ID = "demo-shapes"
DEFAULT_IMAGENET_ID = "vit-b-16"

#: The map shown first and reported by the command line: attention rollout, heads
#: averaged, the lowest 90% of each layer's attention discarded.
MAP_KIND = "rollout"
MAP_FUSION = "mean"
MAP_DISCARD = 0.9

#: How an overlay is drawn over the picture.
OVERLAY_OPACITY = 0.55
OVERLAY_CMAP = "inferno"
OVERLAY_GRID = True
