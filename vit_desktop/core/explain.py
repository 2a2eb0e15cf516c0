"""Why *this* class: class-specific explanations and the attention maps, through one API.

Every method gives a raw map over the patch grid, (rows, cols) float32, prefix tokens
dropped, before any normalisation or upsampling (:func:`explain`); :func:`explain_image`
adds the target's label and the peak in original pixels (:class:`Explanation`).

========== =============== =====================================================================
method     class-specific  what it is
========== =============== =====================================================================
attention  no              the query's attention in one layer (default the last), heads fused
rollout    no              attention rollout (:data:`.maps.DEFAULT_MAP`: mean, discard 0.9)
chefer     yes             Chefer et al. 2021: R = I; R ← R + Ā·R, Ā = E_h[(∇A ⊙ A)⁺]; R's query row
gradcam    yes             token Grad-CAM at the last block's first LayerNorm (pytorch-grad-cam's)
attn-grad  yes             (∇A ⊙ A)⁺ of one layer (default the last), heads fused, query row
occlusion  yes             the target logit's drop when one patch token is removed (batched)
========== =============== =====================================================================

"The query" is the CLS token, or for a model that classifies from the mean of its patch
tokens (``layout.query == "mean"``) the mean of the patch tokens' rows.  The formulas, the
costs and what each answers are in docs/explanations.md; the tensor code is
:mod:`.explain_methods`, the model split it relies on :mod:`.explain_model` (the families'
``embed_tokens``/``encoder_blocks``/``classify_tokens``/``gradcam_layer`` hooks).

Class-specific maps run on the classifier's device with its float32 module
(``clf.module``, never fast mode's low-precision copy), leave the model exactly as it was
(attention hooks removed, no parameter gradients), and take a ``cancel`` callable checked
between blocks or batches (:class:`Cancelled`).  They must not run on the GUI thread, nor
while another thread runs the same module (the explicit attention is switched on the module
itself for the duration of a call).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from . import maps
from .capture import AttentionCapture, token_layout
from .explain_methods import Cancel, Cancelled, attn_grad_row, chefer_row, gradcam_patches, occlusion_patches
from .explain_model import parts_of
from .method_names import CLASS_SPECIFIC, CONTROLS, METHODS, TITLES
from .results import AttentionResult

if TYPE_CHECKING:
    from .classifier import Classifier, ImageInput

__all__ = ["CLASS_SPECIFIC", "CONTROLS", "METHODS", "TITLES", "Cancelled", "Explanation", "explain",
           "explain_image", "explain_module", "map_key", "resolve_target"]  # fmt: skip


@dataclass(frozen=True)
class Explanation:
    """One map for one image, method and target class.

    ``grid_map``: (rows, cols) float32, read-only, raw (before normalisation or upsampling);
    a class-agnostic method's map is the same array for every target.  ``peak``: the centre
    of the map's highest patch, in original pixels (x, y)."""

    method: str
    target: int
    label: str
    grid_map: np.ndarray
    peak: tuple[float, float]

    @property
    def class_specific(self) -> bool:
        return self.method in CLASS_SPECIFIC

    def to_dict(self, map_file: str | None = None) -> dict:
        """The command line's JSON object for this explanation."""
        out = {"method": self.method, "target": {"label": self.label, "index": self.target},
               "peak": [round(self.peak[0], 1), round(self.peak[1], 1)]}  # fmt: skip
        if map_file is not None:
            out["map_file"] = map_file
        return out


def map_key(method: str, target: int | None, *, layer: int = -1, head: int | None = None,
            fusion: str | None = None, discard_ratio: float | None = None) -> tuple:  # fmt: skip
    """A hashable key for caching one image's map: the method, the target (class-specific
    methods only) and the controls the method takes (:data:`CONTROLS`)."""
    _check_method(method)
    given = {"layer": layer, "head": head, "fusion": fusion, "discard": discard_ratio}
    return (method, target if method in CLASS_SPECIFIC else None,
            tuple((c, given[c]) for c in CONTROLS[method]))  # fmt: skip


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")


_TOP = re.compile(r"^top(\d+)$", re.IGNORECASE)


def resolve_target(clf: Classifier, probs: np.ndarray, text: str | int) -> int:
    """The class index ``text`` names for an image whose probabilities are ``probs``:
    ``top1``, ``top2``, … (by probability), a label (exactly, else ignoring case), or a class
    index; a ValueError of one line for anything else."""
    n = int(np.asarray(probs).shape[-1])
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        text = str(int(text))
    text = str(text).strip()
    labels = list(clf.labels[:n])
    if (m := _TOP.match(text)) and text not in labels:
        k = int(m.group(1))
        if not 1 <= k <= n:
            raise ValueError(f"target {text!r}: the model has {n} classes (top1 … top{n})")
        return int(np.argsort(-np.asarray(probs), kind="stable")[k - 1])
    if text in labels:
        return labels.index(text)
    if re.fullmatch(r"\d+", text):
        if int(text) < n:
            return int(text)
        raise ValueError(f"target {text!r}: class indices go from 0 to {n - 1}")
    folded = [lab.casefold() for lab in labels]
    if text.casefold() in folded:
        return folded.index(text.casefold())
    raise ValueError(f"unknown target {text!r}: give top1, top2, …, a class index from 0 to {n - 1} "
                     "or one of the model's labels")  # fmt: skip


def _grid(x: torch.Tensor, patches: int) -> tuple[int, int]:
    """(rows, cols) of ``patches`` square patches tiling the (…, H, W) input."""
    h, w = x.shape[-2:]
    p = round(math.sqrt(h * w / patches))
    if p < 1 or (h // p) * (w // p) != patches:
        raise ValueError(f"{patches} patch tokens do not tile a {h}×{w} input")
    return h // p, w // p


def capture_attention(module: nn.Module, x: torch.Tensor) -> AttentionResult:
    """The attention of one forward pass of ``module`` on one image (queries and keys kept)."""
    with torch.inference_mode(), AttentionCapture(module, keep_qk=True) as cap:
        module(x)
    cls, q, k = cap.collect()
    layout = token_layout(module)
    return AttentionResult(cls=cls[0], q=q[0], k=k[0], grid=_grid(x, cls.shape[-1] - layout.num_prefix_tokens),
                           layout=layout)  # fmt: skip


def _agnostic(att: AttentionResult, method: str, layer: int, head: int | None, fusion: str | None,
              discard_ratio: float | None) -> np.ndarray:  # fmt: skip
    if method == "attention":
        return maps.cls_map(att, layer, head, fusion or "mean")
    spec = maps.DEFAULT_MAP
    return maps.rollout_map(att, fusion or spec.fusion,
                            spec.discard_ratio if discard_ratio is None else discard_ratio,
                            upto_layer=layer)  # fmt: skip


def explain_module(module: nn.Module, x: torch.Tensor, method: str, target: int | None = None, *,
                   layer: int = -1, head: int | None = None, fusion: str | None = None,
                   discard_ratio: float | None = None, attention: AttentionResult | None = None,
                   cancel: Cancel | None = None, recompute: bool | None = None) -> np.ndarray:  # fmt: skip
    """:func:`explain` for a bare model: ``x`` (1, 3, H, W) float32 on ``module``'s device.
    ``recompute`` (Chefer only): rebuild each block's graph during the backward pass (None:
    only where keeping them would pass :data:`.explain_methods.CHEFER_GRAPH_BUDGET`)."""
    _check_method(method)
    if fusion is not None and fusion not in maps.FUSIONS:
        raise ValueError(f"unknown head fusion {fusion!r}; choose one of {', '.join(maps.FUSIONS)}")
    if method not in CLASS_SPECIFIC:
        att = attention if attention is not None else capture_attention(module, x)
        return _agnostic(att, method, layer, head, fusion, discard_ratio)
    if target is None:
        raise ValueError(f"{method} explains one class: give a target class index")
    parts = parts_of(module)
    p = parts.layout.num_prefix_tokens
    if method == "chefer":
        vec = chefer_row(parts, x, int(target), recompute=recompute, cancel=cancel)[p:]
    elif method == "attn-grad":
        vec = attn_grad_row(parts, x, int(target), layer=layer, head=head, fusion=fusion or "mean")[p:]
    elif method == "gradcam":
        vec = gradcam_patches(parts, x, int(target), layer=layer)
    else:
        vec = occlusion_patches(parts, x, int(target), cancel=cancel)
    rows, cols = _grid(x, vec.numel())
    return np.ascontiguousarray(vec.numpy().reshape(rows, cols), dtype=np.float32)


def explain(clf: Classifier, batch: torch.Tensor, method: str, target: int | None = None, *, layer: int = -1,
            head: int | None = None, fusion: str | None = None, discard_ratio: float | None = None,
            attention: AttentionResult | None = None, cancel: Cancel | None = None) -> np.ndarray:  # fmt: skip
    """The raw (rows, cols) float32 map of ``method`` for one preprocessed image ``batch``
    (1, 3, H, W) and the class index ``target`` (class-specific methods; the others ignore
    it).  ``layer``/``head``/``fusion``/``discard_ratio`` apply where the method has them
    (:data:`CONTROLS`; None: the method's default — rollout's are :data:`.maps.DEFAULT_MAP`'s).
    ``attention``: the image's captured attention (class-agnostic methods; None: captured
    here).  Runs on ``clf.device`` with the float32 module; :class:`Cancelled` when ``cancel``
    returns true between blocks or batches."""
    x = batch.to(clf.device, dtype=torch.float32)
    return explain_module(clf.module, x, method, target, layer=layer, head=head, fusion=fusion,
                          discard_ratio=discard_ratio, attention=attention, cancel=cancel)  # fmt: skip


def explain_image(clf: Classifier, image: ImageInput, methods: Sequence[str] = ("rollout",),
                  targets: Sequence[str | int] = ("top1",), *, result=None, cancel: Cancel | None = None,
                  **controls) -> list[Explanation]:  # fmt: skip
    """One :class:`Explanation` per method and target (in that order) for one image (a path,
    a PIL image or a :class:`.images.LoadedImage`).  ``targets`` as :func:`resolve_target`
    reads them.  ``result``: the image's :class:`.results.ClassificationResult` when already
    classified (its probabilities and attention are used), else it is classified here.  A
    class-agnostic method's map is computed once and shared by every target.  ``controls``:
    ``layer``, ``head``, ``fusion``, ``discard_ratio`` (see :func:`explain`)."""
    for m in methods:
        _check_method(m)
    source = None if isinstance(image, (str, os.PathLike)) else getattr(image, "source", None)
    prepared = clf.prepare(image, source)
    batch = torch.from_numpy(prepared.array)[None]
    attention = result.attention if result is not None else None
    if result is not None:
        probs = np.asarray(result.probs)
    else:
        logits, att = clf.forward(batch, mode="full")
        probs = torch.softmax(logits, dim=-1)[0].numpy()
        cls, q, k = att
        attention = AttentionResult(
            cls[0], q[0], k[0], prepared.geometry.patch_grid, token_layout(clf.module)
        )
    indices = list(dict.fromkeys(resolve_target(clf, probs, t) for t in targets))
    out: list[Explanation] = []
    for method in methods:
        shared = None
        for t in indices:
            if method in CLASS_SPECIFIC or shared is None:
                grid_map = explain(clf, batch, method, t, attention=attention, cancel=cancel, **controls)
                grid_map.setflags(write=False)
                shared = grid_map
            r, c = maps.peak_cell(shared)
            label = clf.labels[t] if t < len(clf.labels) else f"class {t}"
            out.append(Explanation(method, t, label, shared, prepared.geometry.patch_center(r, c)))
    return out
