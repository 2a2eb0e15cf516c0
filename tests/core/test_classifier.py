"""The classifier's batching, folder pipeline and large-JPEG path, on the demo model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo.shapes import generate
from vit_desktop.core.errors import DeviceError
from vit_desktop.core.images import load_image
from vit_desktop.core.results import ClassificationResult, ImageFailure


@pytest.fixture(scope="module")
def demo():
    return load_classifier("demo-shapes", device="cpu")


def test_large_jpeg_draft_keeps_geometry_and_prediction(demo, tmp_path):
    s = generate(np.random.default_rng(2), label=7, size=(600, 400))
    big = s.image.resize((6000, 4000), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=92)
    drafted = demo.classify(path, top_k=3)[0]  # decoded at a reduced scale
    assert load_image(path, min_size=demo.preprocessing.resized_size).image.width < 6000
    full = demo.classify(load_image(path), top_k=3)[0]  # decoded at full size
    assert drafted.geometry.original_size == full.geometry.original_size == (6000, 4000)
    assert drafted.geometry.crop_box == pytest.approx(full.geometry.crop_box, abs=1.0)
    assert drafted.top1.index == full.top1.index
    assert np.abs(drafted.probs - full.probs).max() < 0.05


def test_folder_pipeline_keeps_order_reports_failures_and_cancels(demo, tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(10):
        p = tmp_path / f"{i:02d}.png"
        if i == 4:
            p.write_bytes(b"\x89PNG broken")
        else:
            generate(rng, label=i).image.save(p)
        paths.append(str(p))
    out = list(demo.iter_classify(paths, batch_size=3))
    assert [o.source for o in out] == paths
    assert isinstance(out[4], ImageFailure) and "00" not in out[4].error
    assert all(isinstance(o, ClassificationResult) for i, o in enumerate(out) if i != 4)
    # Cancel after the first batch: what was done is kept, the rest is not run.
    seen = []
    it = demo.iter_classify(paths, batch_size=3, cancel=lambda: len(seen) >= 3)
    for o in it:
        seen.append(o)
    assert 3 <= len(seen) < len(paths)


def test_batch_equals_single(demo):
    rng = np.random.default_rng(4)
    imgs = [generate(rng).image for _ in range(4)]
    batch = demo.classify(imgs, attention="cls")
    for img, b in zip(imgs, batch):
        one = demo.classify(img, attention="cls")[0]
        assert np.abs(one.probs - b.probs).max() < 1e-4
        assert one.attention_peak == b.attention_peak


def test_cuda_request_works_or_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        assert load_classifier("demo-shapes", device="cuda").device.type == "cuda"
    else:
        with pytest.raises(DeviceError, match="CUDA is not available"):
            load_classifier("demo-shapes", device="cuda")


def _tiny_classifier(scale_in_proj: float = 1.0, nan_head: bool = False):
    import torch

    from tests.helpers import small_torchvision_vit as _tv
    from vit_desktop.core.classifier import Classifier
    from vit_desktop.core.preprocess import Preprocessing

    model = _tv()
    with torch.no_grad():
        model.encoder.layers[0].self_attention.in_proj_weight.mul_(scale_in_proj)
        if nan_head:
            model.heads.head.bias[0] = float("nan")
    pre = Preprocessing(input_size=(64, 64), patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    return Classifier(model, pre, [f"c{i}" for i in range(7)], "tiny", "tiny", torch.device("cpu"))


def test_queries_beyond_float16_range_keep_the_maps_finite(monkeypatch):
    from vit_desktop.core import capture, maps

    monkeypatch.setattr(capture, "QK_FLOAT32_BUDGET", 0)  # float16, as for the largest models

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (res,) = _tiny_classifier(scale_in_proj=1e6).classify(img, attention="full")
    att = res.attention
    assert np.abs(att.q.astype(np.float64)).max() > 65504  # would have been inf in float16
    for spec in (maps.MapSpec("rollout", discard_ratio=0.5), maps.MapSpec("cls", layer=0, head=1)):
        assert np.isfinite(maps.compute(att, spec, token=3)).all()
    assert all(np.isfinite(res.attention_peak))
    (normal,) = _tiny_classifier().classify(img, attention="full")
    assert normal.attention.q.dtype == np.float16  # float32 only where needed


def test_a_model_whose_output_is_nan_fails_that_image_in_one_line():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (res,) = _tiny_classifier(nan_head=True).classify(img)
    assert isinstance(res, ImageFailure) and "not a number" in res.error and "\n" not in res.error
    assert "error" in res.to_dict()


def test_closing_a_folder_run_starts_no_more_decodes(tmp_path):
    """Cancel, a model switch or closing the window closes the run: decodes queued ahead
    are dropped, not run to the end."""
    from PIL import Image

    from vit_desktop.core.classifier import load_classifier

    clf = load_classifier("demo-shapes", device="cpu")
    paths = []
    for i in range(200):
        paths.append(str(tmp_path / f"{i:03d}.png"))
        Image.new("RGB", (1200, 900), (i, 50, 50)).save(paths[-1])
    decoded = []
    it = clf.iter_classify(paths, batch_size=2, workers=1, on_decoded=lambda loaded: decoded.append(1))
    next(it)
    it.close()
    assert len(decoded) < 20  # at most the few under way when it closed, never all 200
