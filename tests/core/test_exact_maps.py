"""The captured maps are exact: every attention row, head fusion and rollout the app draws
equals what PyTorch's own ``need_weights=True`` attention gives on the same block inputs, and a
rollout computed here from those matrices, to float32 rounding (≤ 1e-6), on ViT-B/16 and B/32
with random weights at 224 px.  Queries and keys are kept in float32 except where the float32
copy would pass the memory budget (then the result says its maps are approximate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vit_desktop.core.families  # noqa: F401  (registers the families)
from tests.helpers import one_torch_thread  # noqa: F401 (an autouse fixture)
from vit_desktop.core import capture, maps
from vit_desktop.core.architectures import imagenet_preprocessing
from vit_desktop.core.classifier import Classifier

TOL = 1e-6
DISCARDS = (0.0, 0.5, 0.9)


@pytest.fixture(scope="module", params=["vit_b_16", "vit_b_32"])
def captured(request):
    """(attention result, PyTorch's (H, N, N) attention per layer) for one image."""
    from torchvision import models

    torch.manual_seed(0)
    model = getattr(models, request.param)(weights=None).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision's head is zeros
    patch = model.patch_size
    clf = Classifier(model, imagenet_preprocessing((224, 224), patch), [f"c{i}" for i in range(1000)],
                     request.param, request.param, torch.device("cpu"))  # fmt: skip
    inputs: list[torch.Tensor] = []
    hooks = [layer.self_attention.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].clone()))
             for layer in model.encoder.layers]  # fmt: skip
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    try:
        (res,) = clf.classify(img, attention="full")  # the app's own capture sees these inputs
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        torch_attn = [
            layer.self_attention(x, x, x, need_weights=True, average_attn_weights=False)[1][0].numpy()
            for layer, x in zip(model.encoder.layers, inputs)
        ]
    return res.attention, torch_attn


def _fuse(a: np.ndarray, fusion: str) -> np.ndarray:
    return {"mean": a.mean, "max": a.max, "min": a.min}[fusion](axis=0)


def test_queries_and_keys_are_float32_and_the_result_is_exact(captured):
    att, _ = captured
    assert att.q.dtype == np.float32 and att.k.dtype == np.float32
    assert not att.approximate


def test_cls_rows_and_every_row_equal_pytorchs_need_weights_attention(captured):
    att, torch_attn = captured
    worst_cls = worst_full = 0.0
    for layer, w in enumerate(torch_attn):
        worst_cls = max(worst_cls, float(np.abs(att.cls[layer] - w[:, 0]).max()))
        worst_full = max(worst_full, float(np.abs(maps.full_attention(att, layer) - w).max()))
    assert worst_cls <= TOL and worst_full <= TOL, (worst_cls, worst_full)


def test_cls_and_patch_maps_with_every_fusion_and_single_heads(captured):
    att, torch_attn = captured
    rows, cols = att.grid
    n = att.num_tokens
    worst = 0.0
    for layer in (0, len(torch_attn) // 2, -1):
        w = torch_attn[layer]
        for token in (None, 1, n // 2, n - 1):
            for fusion in maps.FUSIONS:
                got = maps.token_map(att, token, layer, None, fusion)
                want = _fuse(w[:, token or 0], fusion)[1:].reshape(rows, cols)
                worst = max(worst, float(np.abs(got - want).max()))
            got = maps.token_map(att, token, layer, head=3)
            worst = max(worst, float(np.abs(got - w[3, token or 0, 1:].reshape(rows, cols)).max()))
    assert worst <= TOL, worst


def _reference_factor(fused: np.ndarray, discard: float, discarded: np.ndarray | None = None) -> np.ndarray:
    """One layer of rollout, written from Abnar & Zuidema / vit-explain (row-normalised with
    keepdim): the lowest ``discard`` of the entries set to zero (never the CLS→CLS entry),
    the identity added, halved, rows renormalised."""
    f = fused.astype(np.float32).copy().reshape(-1)
    if discarded is None:
        k = int(f.size * discard)
        discarded = np.argsort(f, kind="stable")[:k]
        discarded = discarded[discarded != 0]
    f[discarded] = 0.0
    n = fused.shape[0]
    a = (f.reshape(n, n) + np.eye(n, dtype=np.float32)) / 2
    return a / a.sum(axis=-1, keepdims=True)


def test_rollout_equals_a_float32_rollout_of_pytorchs_attention(captured):
    att, torch_attn = captured
    rows, cols = att.grid
    worst, ties = 0.0, 0
    for fusion in maps.FUSIONS:
        for discard in DISCARDS:
            joint = np.eye(att.num_tokens, dtype=np.float32)
            for layer, w in enumerate(torch_attn):
                fused = _fuse(w, fusion)
                ref = _reference_factor(fused, discard)
                # Which entries the app discarded: its factor is exactly 0 there.  Where the
                # two sets differ, the entries must be ties at float32 precision (equal to
                # the threshold within 1e-6 relative); the reference then takes the app's
                # choice among them.  Any other difference fails.
                ours = maps.rollout_layer(maps.fused_layer(att, layer, fusion), fusion, discard, fused=True)
                off = ~np.eye(att.num_tokens, dtype=bool)
                mine, theirs = (ours == 0) & off, (ref == 0) & off
                if (mine != theirs).any():
                    assert mine.sum() == theirs.sum()
                    k = int(fused.size * discard)
                    threshold = np.sort(fused.reshape(-1))[k - 1]
                    assert np.allclose(fused[mine != theirs], threshold, rtol=1e-6, atol=0)
                    ties += int((mine != theirs).sum()) // 2
                    ref = _reference_factor(fused, discard, np.flatnonzero(mine))
                joint = ref @ joint
            want = joint[0, 1:].reshape(rows, cols)
            got = maps.rollout_map(att, fusion, discard)
            worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= TOL, (worst, ties)


def test_the_default_map_is_the_exact_rollout(captured):
    att, torch_attn = captured
    spec = maps.DEFAULT_MAP
    got = maps.compute(att, spec)
    assert got.shape == att.grid
    assert np.allclose(got, maps.rollout_map(att, spec.fusion, spec.discard_ratio), rtol=0, atol=0)


def test_only_the_huge_models_fall_back_to_float16():
    def dtype(layers, tokens, width, heads):
        return capture.qk_dtype(layers, heads, tokens, width // heads)

    assert dtype(32, 1370, 1280, 16) == torch.float16  # ViT-H/14 at 518 px: 449 MB in float32
    assert dtype(24, 1025, 1024, 16) == torch.float32  # ViT-L/16 at 512 px: 201 MB
    assert dtype(32, 257, 1280, 16) == torch.float32  # ViT-H/14 at 224 px
    assert dtype(12, 197, 768, 12) == torch.float32  # ViT-B/16
    assert dtype(12, 577, 768, 12) == torch.float32  # ViT-B/16 at 384 px
    # a batch is held whole: a folder run's 8 images of ViT-L/16 at 512 px (1.6 GB) fall back
    assert capture.qk_dtype(24, 16, 1025, 64, batch=8) == torch.float16
    assert capture.qk_dtype(12, 12, 197, 64, batch=8) == torch.float32  # ViT-B/16: 116 MB


def test_past_the_budget_the_result_says_its_maps_are_approximate(monkeypatch):
    from tests.helpers import small_torchvision_vit
    from vit_desktop.core.preprocess import Preprocessing

    pre = Preprocessing(input_size=(64, 64), patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    clf = Classifier(small_torchvision_vit(), pre, [f"c{i}" for i in range(7)], "t", "t", torch.device("cpu"))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (exact,) = clf.classify(img, attention="full")
    monkeypatch.setattr(capture, "QK_FLOAT32_BUDGET", 1024)  # smaller than this model's queries and keys
    (approx,) = clf.classify(img, attention="full")
    assert not exact.attention.approximate and exact.attention.q.dtype == np.float32
    assert approx.attention.approximate and approx.attention.q.dtype == np.float16
    # The query's own rows stay float32 either way; other rows now differ by float16 rounding.
    assert np.array_equal(exact.attention.cls, approx.attention.cls)
    diff = np.abs(maps.full_attention(exact.attention, 0) - maps.full_attention(approx.attention, 0)).max()
    assert 0 < diff < 1e-2
