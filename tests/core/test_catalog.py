from __future__ import annotations

import pytest
import torch
from torchvision import models

from vit_desktop.core import catalog
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.errors import ModelNotFoundError


def test_every_torchvision_vit_weight_has_an_entry():
    entries = {e.weights_name and (e.architecture, e.weights_name): e for e in catalog.entries()}
    for builder in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"):
        for w in models.get_model_weights(builder):
            e = entries[(f"torchvision:{builder}", w.name)]
            meta = w.meta
            assert e.params == meta["num_params"]
            assert e.labels == tuple(meta["categories"]) and e.num_classes == 1000
            assert e.url == w.url and e.filename == w.url.rsplit("/", 1)[1]
            assert e.sha256 and e.filename.rsplit(".", 1)[0].endswith(e.sha256)
            assert e.gflops == meta["_ops"] and e.file_size_mb == meta["_file_size"]
            assert e.acc1 == meta["_metrics"]["ImageNet-1K"]["acc@1"]
            t = w.transforms()
            assert e.input_size == (t.crop_size[0], t.crop_size[0])
            assert e.preprocessing.resize_size == t.resize_size[0]
            assert list(e.preprocessing.mean) == list(t.mean)
            rows, cols = e.patch_grid
            assert rows * e.patch_size == e.input_size[0]


def test_known_sizes_come_from_the_weights():
    assert catalog.get("vit-h-14-swag-e2e").patch_grid == (37, 37)
    assert catalog.get("vit-b-16-swag-e2e").patch_grid == (24, 24)
    assert catalog.get("vit-l-16").preprocessing.resize_size == 242
    assert catalog.get("vit-b-32").patch_grid == (7, 7)


def test_demo_entry():
    e = catalog.get("demo-shapes")
    assert e.group == "Demo" and not e.downloadable and e.num_classes == 10
    assert e.file_size_mb is not None and e.file_size_mb <= 5.0


def test_aliases_and_unknown():
    assert catalog.get("vit_b_16").id == "vit-b-16"
    assert catalog.get("vit_b_16.IMAGENET1K_SWAG_E2E_V1").id == "vit-b-16-swag-e2e"
    with pytest.raises(ModelNotFoundError, match="known models"):
        catalog.get("resnet50")


@pytest.mark.parametrize("model_id", ["vit-b-32", "vit-b-16-swag-e2e"])
def test_random_weight_builds_match_the_entry(model_id):
    clf = load_classifier(model_id, device="cpu", pretrained=False)
    h, w = clf.preprocessing.input_size
    with torch.inference_mode():
        out = clf.module(torch.randn(1, 3, h, w))
    assert out.shape == (1, 1000) and out.abs().max() > 0  # head re-initialised, not zeros
