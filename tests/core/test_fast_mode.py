"""Fast mode: off by default, on where the hardware computes low precision natively, and
off again gives exactly the float32 results back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vit_desktop.core import devices
from vit_desktop.core.classifier import FAST_MODE_TRADE, load_classifier


@pytest.fixture(scope="module")
def demo():
    return load_classifier("demo-shapes", device="cpu")


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8)) for i in range(3)]


def test_off_by_default_and_round_trip_is_exact(demo):
    assert demo.fast is False and demo.dtype == torch.float32
    before = demo.classify(_images(), top_k=3, attention="cls")
    why = demo.set_fast(True)
    if why is None:
        assert demo.fast and demo.dtype == torch.bfloat16
        during = demo.classify(_images(), top_k=3, attention="cls")
        for a, b in zip(before, during):
            assert b.attention.cls.dtype == np.float32  # captured rows stay float32
            assert np.abs(a.probs - b.probs).max() < 0.05
    else:
        assert not demo.fast and demo.dtype == torch.float32
        assert isinstance(why, str) and why
    assert demo.set_fast(False) is None
    assert not demo.fast and demo.dtype == torch.float32
    after = demo.classify(_images(), top_k=3, attention="cls")
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.attention.cls, b.attention.cls)


def test_unavailable_fast_mode_says_why(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    clf = load_classifier("demo-shapes", device="cpu", fast=True)
    assert not clf.fast
    assert clf.fast_unavailable_reason() is not None
    assert any(n.startswith("fast mode is off: ") for n in clf.notices)
    assert "bfloat16" in FAST_MODE_TRADE


def test_fast_dtype_by_device():
    assert devices.fast_dtype(torch.device("cuda"))[0] == torch.float16
    assert devices.fast_dtype(torch.device("mps"))[0] == torch.float16
    dtype, why = devices.fast_dtype(torch.device("cpu"))
    assert (dtype is None) == (not devices.cpu_has_native_bf16()) and why
