"""The explanation methods' names, titles and controls, without torch: the window's menus
read them before PyTorch is imported; :mod:`.explain` computes the maps."""

from __future__ import annotations

#: Every method, in the order menus and the command line list them.
METHODS = ("attention", "rollout", "chefer", "gradcam", "attn-grad", "occlusion")
CLASS_SPECIFIC = frozenset({"chefer", "gradcam", "attn-grad", "occlusion"})

#: Names for menus and legends.
TITLES = {
    "attention": "CLS attention",
    "rollout": "Attention rollout",
    "chefer": "Relevance (Chefer et al.)",
    "gradcam": "Token Grad-CAM",
    "attn-grad": "Attention × gradient",
    "occlusion": "Token occlusion",
}

#: The map controls each method takes (the others are ignored): ``layer``, ``head``,
#: ``fusion`` (of heads), ``discard`` (rollout's discard ratio).
CONTROLS = {
    "attention": ("layer", "head", "fusion"),
    "rollout": ("layer", "fusion", "discard"),
    "chefer": (),
    "gradcam": ("layer",),
    "attn-grad": ("layer", "head", "fusion"),
    "occlusion": (),
}

#: The class-specific methods in menu order.
CLASS_METHODS = tuple(m for m in METHODS if m in CLASS_SPECIFIC)
