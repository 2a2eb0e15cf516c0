"""The ``demo-shapes`` model: its architecture, preprocessing and where its weights live."""

from __future__ import annotations

from importlib import resources

from ..minivit import MiniViTConfig
from ..preprocess import Preprocessing
from .shapes import CLASSES

WEIGHTS_FILE = "demo_shapes.safetensors"

CONFIG = MiniViTConfig(
    image_size=128,
    patch_size=16,
    num_classes=len(CLASSES),
    embed_dim=128,
    depth=6,
    num_heads=4,
    mlp_dim=256,
    norm_first=True,
    final_norm=True,
    head_norm=False,
    stem_channels=(24, 48, 96),
    stem_strides=(2, 2, 2),
    input_norm=True,
)

PREPROCESSING = Preprocessing(
    input_size=(CONFIG.image_size, CONFIG.image_size),
    patch_size=CONFIG.patch_size,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    mode="letterbox",
    interpolation="bilinear",
)


def resource_dir():
    """The installed ``resources`` folder (inside the wheel), via importlib.resources."""
    return resources.files("vit_desktop.resources")


def weights_resource():
    return resource_dir().joinpath(WEIGHTS_FILE)
