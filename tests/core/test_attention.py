"""Attention capture and maps, checked against PyTorch's own attention weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from vit_desktop.core import maps
from vit_desktop.core.capture import AttentionCapture, attention_modules
from vit_desktop.core.classifier import Classifier
from vit_desktop.core.minivit import MiniViT, MiniViTConfig
from vit_desktop.core.preprocess import Preprocessing
from vit_desktop.core.results import AttentionResult


def _tv(image_size: int, patch: int, layers: int = 3, heads: int = 4, width: int = 64) -> VisionTransformer:
    torch.manual_seed(0)
    m = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=layers, num_heads=heads,
                          hidden_dim=width, mlp_dim=2 * width, num_classes=10)  # fmt: skip
    nn.init.normal_(m.heads.head.weight, std=0.5)  # torchvision's head starts at zero
    return m.eval()


def _reference_weights(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Full per-head attention from nn.MultiheadAttention's own slow path (need_weights)."""
    out: list[torch.Tensor] = []
    handles = []
    for m in attention_modules(model):

        def pre(mod, args, kwargs):
            kwargs["need_weights"] = True
            kwargs["average_attn_weights"] = False
            return args, kwargs

        def post(mod, args, kwargs, result):
            out.append(result[1].detach())

        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def _capture(model, x, keep_qk=True):
    with torch.inference_mode(), AttentionCapture(model, keep_qk=keep_qk) as cap:
        logits = model(x)
    return logits, cap.collect()


def _naive_rollout(ws: list[np.ndarray], fusion="mean", discard=0.0) -> np.ndarray:
    n = ws[0].shape[-1]
    result = np.eye(n)
    for w in ws:
        fused = {"mean": w.mean(0), "max": w.max(0), "min": w.min(0)}[fusion].astype(np.float64)
        if discard:
            flat = fused.reshape(-1).copy()
            k = int(flat.size * discard)
            order = np.argsort(flat, kind="stable")[:k]
            order = order[order != 0]
            flat[order] = 0
            fused = flat.reshape(n, n)
        a = 0.5 * fused + 0.5 * np.eye(n)
        a = a / a.sum(-1, keepdims=True)
        result = a @ result
    return result


@pytest.mark.parametrize("image_size,patch", [(112, 16), (64, 16), (96, 8)])
def test_logits_equal_and_cls_rows_match_reference(image_size, patch):
    model = _tv(image_size, patch)
    x = torch.randn(2, 3, image_size, image_size)
    with torch.inference_mode():
        plain = model(x)
    logits, (cls, q, k) = _capture(model, x)
    assert plain.abs().max() > 0.1  # a real head, not torchvision's zeros
    assert (logits - plain).abs().max().item() <= 1e-5
    ref = _reference_weights(model, x)
    grid = image_size // patch
    assert cls.shape == (2, 3, 4, grid * grid + 1)
    for layer, w in enumerate(ref):
        np.testing.assert_allclose(cls[:, layer], w[:, :, 0, :].numpy(), atol=1e-5)
    att = AttentionResult(cls=cls[1], q=q[1], k=k[1], grid=(grid, grid))
    for layer, w in enumerate(ref):
        np.testing.assert_allclose(maps.full_attention(att, layer), w[1].numpy(), atol=2e-3)


def test_hooks_always_removed_even_after_an_error():
    model = _tv(64, 16)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        before = model(x)

    def boom(mod, args):
        raise RuntimeError("boom")

    h = model.encoder.layers[1].mlp.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"), AttentionCapture(model), torch.inference_mode():
        model(x)
    h.remove()
    assert all("forward" not in m.__dict__ for m in attention_modules(model))
    with torch.inference_mode():
        assert torch.equal(model(x), before)


@pytest.mark.parametrize("grid,patch", [(7, 16), (14, 16), (24, 16), (37, 14)])
def test_maps_for_any_grid(grid, patch):
    model = _tv(grid * patch, patch, layers=2, heads=2, width=32)
    x = torch.randn(1, 3, grid * patch, grid * patch)
    _, (cls, q, k) = _capture(model, x)
    att = AttentionResult(cls=cls[0], q=q[0], k=k[0], grid=(grid, grid))
    ref = [w[0].numpy() for w in _reference_weights(model, x)]
    m = maps.cls_map(att, layer=1, head=1)
    assert m.shape == (grid, grid)
    np.testing.assert_allclose(m.reshape(-1), ref[1][1, 0, 1:], atol=1e-5)
    for fusion in ("mean", "max", "min"):
        fused = {"mean": ref[0].mean(0), "max": ref[0].max(0), "min": ref[0].min(0)}[fusion]
        np.testing.assert_allclose(maps.cls_map(att, 0, None, fusion).reshape(-1), fused[0, 1:], atol=1e-5)
    token = grid * grid // 2 + 1
    np.testing.assert_allclose(
        maps.token_map(att, token, layer=0, head=0).reshape(-1), ref[0][0, token, 1:], atol=2e-3
    )
    roll = maps.rollout_map(att, "mean", 0.0)
    np.testing.assert_allclose(roll.reshape(-1), _naive_rollout(ref)[0, 1:], atol=2e-3)


@pytest.mark.parametrize("fusion,discard", [("max", 0.5), ("min", 0.9), ("mean", 0.3)])
def test_rollout_fusions_and_discard_match_reference(fusion, discard):
    model = _tv(64, 16, layers=3)
    x = torch.randn(1, 3, 64, 64)
    _, (cls, q, k) = _capture(model, x)
    att = AttentionResult(cls=cls[0], q=q[0], k=k[0], grid=(4, 4))
    ref = [w[0].numpy() for w in _reference_weights(model, x)]
    got = maps.rollout_map(att, fusion, discard)
    want = _naive_rollout(ref, fusion, discard)[0, 1:]
    np.testing.assert_allclose(got.reshape(-1), want, atol=5e-3)
    row = maps.rollout_row(att, token=3, fusion=fusion, discard_ratio=discard)
    np.testing.assert_allclose(row, _naive_rollout(ref, fusion, discard)[3], atol=5e-3)


def test_rollout_cache_serves_every_fusion_and_discard_of_one_result():
    model = _tv(64, 16, layers=3)
    x = torch.randn(1, 3, 64, 64)
    _, (cls, q, k) = _capture(model, x)
    att = AttentionResult(cls=cls[0], q=q[0], k=k[0], grid=(4, 4))
    ref = [w[0].numpy() for w in _reference_weights(model, x)]
    for fusion, discard in [("mean", 0.0), ("mean", 0.9), ("max", 0.5), ("mean", 0.5), ("min", 0.0)]:
        got = maps.rollout_map(att, fusion, discard, token=2)
        np.testing.assert_allclose(got.reshape(-1), _naive_rollout(ref, fusion, discard)[2, 1:], atol=5e-3)
    assert (id(att), "mean") in maps._fused_cache and (id(att), "max") in maps._fused_cache
    other = AttentionResult(cls=cls[0], q=q[0] * 0, k=k[0], grid=(4, 4))  # uniform attention
    flat = maps.rollout_map(other, "mean", 0.0)
    assert np.allclose(flat, flat.mean(), rtol=1e-3)  # not served from the first result's cache


def test_capture_without_qk_keeps_only_cls_rows():
    model = _tv(64, 16)
    _, (cls, q, k) = _capture(model, torch.randn(1, 3, 64, 64), keep_qk=False)
    assert q is None and k is None and cls.shape == (1, 3, 4, 17)
    att = AttentionResult(cls=cls[0], q=None, k=None, grid=(4, 4))
    assert maps.cls_map(att).shape == (4, 4)
    with pytest.raises(ValueError, match="full"):
        maps.rollout_map(att)


def test_results_are_frozen_numpy():
    model = _tv(64, 16)
    _, (cls, q, k) = _capture(model, torch.randn(1, 3, 64, 64))
    att = AttentionResult(cls=cls[0], q=q[0], k=k[0], grid=(4, 4))
    assert isinstance(att.cls, np.ndarray) and att.q.dtype == np.float32  # float16 only past the budget
    with pytest.raises(ValueError):
        att.cls[0, 0, 0] = 1.0
    with pytest.raises(AttributeError):
        att.grid = (1, 1)  # type: ignore[misc]


def test_minivit_capture_and_classifier_batches():
    cfg = MiniViTConfig(image_size=48, patch_size=8, num_classes=3, embed_dim=32, depth=2, num_heads=4,
                        mlp_dim=64, stem_channels=(8,), input_norm=True)  # fmt: skip
    torch.manual_seed(1)
    model = MiniViT(cfg).eval()
    pre = Preprocessing(input_size=(48, 48), patch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, mode="letterbox")
    clf = Classifier(model, pre, ("a", "b", "c"), "mini", "Mini", torch.device("cpu"))
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)) for w, h in [(60, 30), (30, 90), (48, 48)]
    ]
    batch = clf.classify(imgs, top_k=2)
    single = [clf.classify(im, top_k=2)[0] for im in imgs]
    for b, s in zip(batch, single):
        assert [p.index for p in b.top_k] == [p.index for p in s.top_k]
        assert abs(b.top1.prob - s.top1.prob) < 1e-5
        np.testing.assert_allclose(b.attention.cls, s.attention.cls, atol=1e-5)
        assert b.attention.grid == (6, 6)
        x, y = b.attention_peak
        left, top, right, bottom = b.geometry.crop_box
        assert left <= x <= right and top <= y <= bottom
    assert not any(isinstance(v, torch.Tensor) for r in batch for v in vars(r).values())


def test_gpu_out_of_memory_falls_back_to_cpu(monkeypatch):
    model = _tv(64, 16)
    pre = Preprocessing(input_size=(64, 64), patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, resize_size=64)
    clf = Classifier(model, pre, tuple("abcdefghij"), "tiny", "Tiny", torch.device("cpu"))
    real = clf._forward
    calls = []

    def flaky(batch, mode):
        calls.append(clf.device.type)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch, mode)

    # Pretend the classifier sat on a GPU when the first forward ran out of memory.
    clf.device = torch.device("meta")
    monkeypatch.setattr(clf, "_forward", flaky)
    monkeypatch.setattr(clf.module, "to", lambda device: clf.module)
    from PIL import Image

    res = clf.classify(Image.new("RGB", (64, 64), (10, 20, 30)))
    assert res[0].device == "cpu" and calls == ["meta", "cpu"]
    assert any("out of memory" in n and "CPU" in n for n in clf.notices)
