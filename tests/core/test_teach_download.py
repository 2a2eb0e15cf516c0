"""A classifier taught on a catalog backbone whose weights are downloaded: the backbone is
named in the file, not copied; opening the file without the weights on disk names the missing
model (the window offers its download) and, when allowed, downloads and verifies them again
from a server on 127.0.0.1 — the same code as any catalog model."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import served_demo_backbone
from vit_desktop.core import weights
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo.new_shapes import write_class_folders
from vit_desktop.core.errors import WeightsError
from vit_desktop.core.teach import saved
from vit_desktop.core.teach.train import Settings, train


@pytest.fixture
def served_backbone():
    with served_demo_backbone(
        "test-shapes-download", "Shapes (downloaded)", "test-shapes-0001.pth"
    ) as served:
        yield served


def test_missing_backbone_weights_are_named_then_downloaded(served_backbone, tmp_path):
    srv, entry = served_backbone
    write_class_folders(tmp_path / "d", ("heart", "arrow"), per_class=5, seed=31)
    taught = train(Settings(str(tmp_path / "d"), backbone=entry.id))
    assert srv.hits == 1 and taught.backbone.catalog and taught.backbone.sha256 == entry.sha256
    path, _ = saved.save(taught, tmp_path / "m.safetensors")
    assert saved.missing_backbone(path) is None  # on disk
    weights.cached_path(entry).unlink()
    assert saved.missing_backbone(path) == entry
    with pytest.raises(WeightsError) as info:
        load_classifier(str(path), "cpu", allow_download=False)
    assert "\n" not in str(info.value)
    clf = load_classifier(str(path), "cpu")  # downloads and checks them again
    assert srv.hits == 2 and saved.missing_backbone(path) is None
    x = torch.from_numpy(clf.prepare(sorted((tmp_path / "d" / "heart").glob("*.png"))[0]).array)[None]
    with torch.no_grad():
        assert torch.equal(clf.module(x), taught.module(x))
