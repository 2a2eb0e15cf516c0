"""Run a model at another input size than the one it was trained at (Model › Input size,
``--input-size``).

The model's family resamples its position embeddings to the new patch grid
(:attr:`.architectures.Family.resize`: bicubic with antialiasing in float32, timm's rule,
for every family that builds a :class:`.tokenvit.TokenViT` and for torchvision's ViT);
the preprocessing keeps its mode, statistics and its resize-to-crop ratio.  Accuracy may
change away from the trained size, and the person is told so.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .architectures import family_for_module
from .errors import VitDesktopError
from .preprocess import MAX_INPUT_SIDE, Preprocessing, parse_input_size


class InputSizeError(VitDesktopError):
    """The model cannot run at the size asked for."""


def parse_size(text: str) -> tuple[int, int]:
    """:func:`.preprocess.parse_input_size`, with one sentence when ``text`` is not a size."""
    size = parse_input_size(text)
    if size is None:
        raise InputSizeError(f"input size {text!r:.40} is not a number of pixels (e.g. 384 or 384x256)")
    return size


def resize_model(module: nn.Module, pre: Preprocessing, size: tuple[int, int], name: str) -> Preprocessing:
    """Make ``module`` run on ``size`` (height, width) pixels and return the preprocessing
    for it; an :class:`InputSizeError` in one sentence when it cannot (a size that is not a
    whole number of patches, a family that runs at one size only)."""
    h, w = int(size[0]), int(size[1])
    p = pre.patch_size
    if (h, w) == pre.input_size:
        return pre
    if not (p <= h <= MAX_INPUT_SIDE and p <= w <= MAX_INPUT_SIDE) or h % p or w % p:
        raise InputSizeError(
            f"{name}: an input of {w}×{h} px is not a whole number of its {p}-px patches "
            f"(use a multiple of {p} from {p} to {MAX_INPUT_SIDE - MAX_INPUT_SIDE % p})"
        )
    family = family_for_module(module)
    if family is None or family.resize is None:
        th, tw = pre.input_size
        raise InputSizeError(f"{name}: this kind of model runs at its trained size only ({tw}×{th} px)")
    try:
        family.resize(module, (h // p, w // p))
    except ValueError as exc:
        raise InputSizeError(f"{name}: {exc}") from None
    resize = None
    if pre.resize_size is not None:
        old = min(pre.input_size)
        resize = max(min(h, w), round(pre.resize_size * min(h, w) / old))
    return replace(pre, input_size=(h, w), resize_size=resize)
