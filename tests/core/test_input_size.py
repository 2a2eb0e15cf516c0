"""Running a model at another input size: position embeddings resampled as timm does, the
preprocessing following, and the trained size restored exactly."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vit_desktop.core.architectures import imagenet_preprocessing
from vit_desktop.core.classifier import Classifier
from vit_desktop.core.resizing import InputSizeError, parse_size
from vit_desktop.core.tokenvit import TokenViT, TokenViTConfig


def _timm_pair(img_size: int, **kw):
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, depth=2, img_size=64, **kw)
    for p in m.parameters():
        p.data.normal_(0, 0.1 if p.ndim > 1 else 0.05)
    m.head.weight.data.normal_(0, 2.0)  # logits of a few units, so a difference would show
    big = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, depth=2,
                            img_size=img_size, **kw)  # fmt: skip
    from timm.models.vision_transformer import checkpoint_filter_fn

    big.load_state_dict(checkpoint_filter_fn(m.state_dict(), big))
    return m.eval(), big.eval()


@pytest.mark.parametrize("kw", [{}, {"reg_tokens": 2, "no_embed_class": True}])
def test_resampled_positions_equal_timms_own(kw):
    small, big = _timm_pair(96, **kw)
    cfg = TokenViTConfig(grid=(4, 4), patch_size=16, width=192, depth=2, heads=3, mlp_dim=768, num_classes=7,
                         registers=kw.get("reg_tokens", 0), pos_prefix=not kw.get("no_embed_class", False))  # fmt: skip
    ours = TokenViT(cfg).eval()
    ours.load_state_dict(small.state_dict())
    ours.set_grid((6, 6))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        diff = (ours(x) - big(x)).abs().max().item()
        scale = big(x).abs().max().item()
    assert scale > 1.0
    assert diff <= 1e-4


def _classifier():
    small, _ = _timm_pair(64)
    cfg = TokenViTConfig(grid=(4, 4), patch_size=16, width=192, depth=2, heads=3, mlp_dim=768, num_classes=7)
    ours = TokenViT(cfg)
    ours.load_state_dict(small.state_dict())
    pre = imagenet_preprocessing((64, 64), 16)
    return Classifier(ours, pre, [f"c{i}" for i in range(7)], "m", "tiny", torch.device("cpu"))


def test_classifier_runs_at_another_size_and_back_exactly():
    clf = _classifier()
    img = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8))
    before = clf.classify([img])[0]
    note = clf.set_input_size((96, 128))
    assert "accuracy may change" in note and "128×96" in note
    res = clf.classify([img])[0]
    assert res.geometry.patch_grid == (6, 8)
    assert res.attention.cls.shape[-1] == 1 + 6 * 8
    assert clf.preprocessing.resize_size == round(clf.trained_size[0] * 256 / 224 * 96 / 64)
    clf.set_input_size((64, 64))
    again = clf.classify([img])[0]
    np.testing.assert_array_equal(before.probs, again.probs)


def test_sizes_that_cannot_be_used_are_one_line():
    clf = _classifier()
    with pytest.raises(InputSizeError, match="whole number of its 16-px patches"):
        clf.set_input_size((100, 100))
    assert parse_size("384") == (384, 384)
    assert parse_size("384x256") == (256, 384)
    with pytest.raises(InputSizeError, match="not a number"):
        parse_size("big")


def test_a_family_without_resize_says_it_runs_at_its_trained_size():
    from vit_desktop.core.classifier import load_classifier

    clf = load_classifier("demo-shapes", device="cpu")
    with pytest.raises(InputSizeError, match="trained size only"):
        clf.set_input_size((clf.preprocessing.input_size[0] * 2,) * 2)


def test_torchvision_vit_resamples_and_goes_back_exactly():
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    m = vit_b_16(weights=None, image_size=64, num_classes=5)
    m.encoder.layers = m.encoder.layers[:2]
    torch.nn.init.normal_(m.heads.head.weight, std=0.1)
    clf = Classifier(m, imagenet_preprocessing((64, 64), 16), list("abcde"), "tv", "tv", torch.device("cpu"))
    img = Image.fromarray((np.random.default_rng(1).random((80, 80, 3)) * 255).astype(np.uint8))
    before = clf.classify([img])[0]
    clf.set_input_size((96, 96))
    assert clf.classify([img])[0].geometry.patch_grid == (6, 6)
    with pytest.raises(InputSizeError, match="square"):
        clf.set_input_size((96, 128))
    clf.set_input_size((64, 64))
    np.testing.assert_array_equal(before.probs, clf.classify([img])[0].probs)


def test_the_command_line_runs_a_checkpoint_at_another_size(tmp_path):
    import json
    import subprocess
    import sys

    from tests.helpers import shape_file, small_torchvision_vit

    ckpt = tmp_path / "tv.pth"
    torch.save(small_torchvision_vit().state_dict(), ckpt)
    img, _ = shape_file(tmp_path, 2, size=(200, 150))
    cmd = [
        sys.executable,
        "-m",
        "vit_desktop",
        "classify",
        str(img),
        "--model",
        str(ckpt),
        "--format",
        "json",
    ]
    out = subprocess.run([*cmd, "--input-size", "96"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["patch_grid"] == [6, 6]
    assert "accuracy may change" in out.stderr
    bad = subprocess.run([*cmd, "--input-size", "100"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1 and "16-px patches" in bad.stderr
    word = subprocess.run([*cmd, "--input-size", "big"], capture_output=True, text=True, timeout=120)
    assert word.returncode == 2 and "not a size in pixels" in word.stderr
