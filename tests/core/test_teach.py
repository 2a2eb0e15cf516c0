"""Teaching a classifier from folders (:mod:`vit_desktop.core.teach`): accuracy on shapes the
demo model never saw against a plain linear probe measured in the same test, the feature
cache, the saved file's round trip (catalog and embedded backbones, fine-tuned blocks),
class-specific maps of a multi-layer head against the formula, and bad input."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from tests.helpers import one_torch_thread, small_torchvision_vit  # noqa: F401 (an autouse fixture)
from vit_desktop.core import explain as ex
from vit_desktop.core.classifier import Classifier, load_classifier
from vit_desktop.core.demo.new_shapes import write_class_folders, write_split
from vit_desktop.core.errors import CheckpointError
from vit_desktop.core.families.taught import FeatureSpec, TaughtViT
from vit_desktop.core.teach import heads, saved
from vit_desktop.core.teach.dataset import TeachError
from vit_desktop.core.teach.features import FeatureCache, Item, extract
from vit_desktop.core.teach.identity import backbone_identity
from vit_desktop.core.teach.train import Settings, _feature_rows, train

CLASSES = ("heart", "arrow", "crescent", "l-shape")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("newshapes")
    write_split(root, CLASSES, train_per_class=30, test_per_class=25, seed=0)
    return root


def _test_set(root, classes):
    paths, labels = [], []
    for i, c in enumerate(classes):
        for p in sorted((root / "test" / c).glob("*.png")):
            paths.append(str(p))
            labels.append(i)
    return paths, np.array(labels)


def _accuracy(clf: Classifier, paths, labels, classes) -> float:
    got = [classes.index(r.top_k[0].label) for r in clf.iter_classify(paths)]
    return float((np.array(got) == labels).mean())


@pytest.mark.slow
def test_default_mode_beats_a_plain_cls_probe_on_new_shapes(split, tmp_path):
    taught = train(Settings(str(split / "train")))
    assert taught.classes == tuple(sorted(CLASSES))
    assert taught.counts == dict.fromkeys(taught.classes, 30)
    path, report = saved.save(taught, tmp_path / "shapes.safetensors")
    clf = load_classifier(str(path), "cpu")
    paths, labels = _test_set(split, list(taught.classes))
    ours = _accuracy(clf, paths, labels, list(taught.classes))
    # The plain probe: a linear head on the last block's CLS token alone, one fixed decay.
    demo = load_classifier("demo-shapes", "cpu")
    cache = FeatureCache(demo, backbone_identity(demo).cache_key(demo.module))
    from vit_desktop.core.teach.dataset import scan

    ex_train = scan(split / "train")
    items = [Item(e.path, e.digest) for e in ex_train.items]
    feats = extract(demo, cache, items)
    assert feats.computed == 0  # every training image came from the cache the teaching filled
    spec = FeatureSpec((-1,), ("query",))
    x = _feature_rows(np.stack([feats.blocks[i] for i in items]), spec)
    probe = heads.fit_linear(x, np.array([e.label for e in ex_train.items]), 4, 1e-4)
    test_items = [Item(p, f"{k:064x}") for k, p in enumerate(paths)]
    tf = extract(demo, FeatureCache(demo, "test-set-only"), test_items)
    xt = _feature_rows(np.stack([tf.blocks[i] for i in test_items]), spec)
    baseline = float((probe.logits(xt).argmax(1) == labels).mean())
    assert ours >= 0.85, (ours, baseline)
    assert ours >= baseline - 0.02, (ours, baseline)
    rep = json.loads(report.read_text())
    assert rep["classes"] == list(taught.classes) and rep["accuracy"] == taught.accuracy
    assert np.array(rep["confusion"]).sum() == sum(int(v) for v in np.array(taught.confusion).sum(1))


def test_cache_computes_only_new_images_and_settings(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:3], per_class=6, seed=3)
    first = train(Settings(str(tmp_path / "d")))
    assert first.extracted == 18
    assert train(Settings(str(tmp_path / "d"), mode="multilayer")).extracted == 0
    extra = write_class_folders(tmp_path / "more", CLASSES[:1], per_class=2, seed=99)
    for p in extra[CLASSES[0]]:
        shutil.copy(p, tmp_path / "d" / CLASSES[0] / f"new_{p.name}")
    again = train(Settings(str(tmp_path / "d")))
    assert again.extracted == 2 and again.counts[CLASSES[0]] == 8
    aug = train(Settings(str(tmp_path / "d"), augment=True))
    assert aug.extracted == 20 * 4  # the copies are new; the images themselves are cached
    assert np.array_equal(
        again.module.head.weight.detach(), train(Settings(str(tmp_path / "d"))).module.head.weight.detach()
    )


def _batch(clf: Classifier, paths) -> torch.Tensor:
    return torch.from_numpy(np.stack([clf.prepare(p).array for p in paths]))


@pytest.mark.parametrize("mode", ["linear", "multilayer", "finetune"])
def test_saved_file_reopens_with_the_same_logits(tmp_path, mode):
    folder = tmp_path / "d"
    files = write_class_folders(folder, CLASSES[:3], per_class=6, seed=4)
    taught = train(Settings(str(folder), mode=mode, epochs=2))
    path, _ = saved.save(taught, tmp_path / "m.safetensors")
    clf = load_classifier(str(path), "cpu")
    assert isinstance(clf.module, TaughtViT) and clf.labels == taught.classes
    x = _batch(clf, [files[c][0] for c in CLASSES[:3]])
    with torch.no_grad():
        want = taught.module(x)
    got, _ = clf.forward(x, "none")
    assert torch.equal(got, want)
    stored = [k for k in load_file(str(path)) if k.startswith("backbone.")]
    demo = load_classifier("demo-shapes", "cpu").module
    if mode == "finetune":
        assert stored and all(".layers.5." in k for k in stored)  # the last block only
        changed = load_file(str(path))[stored[0]]
        assert not torch.equal(changed, demo.state_dict()[stored[0].removeprefix("backbone.")])
    else:
        assert stored == []  # a catalog backbone: named, not copied


def test_finetuning_two_blocks_stores_both_and_reopens(tmp_path):
    files = write_class_folders(tmp_path / "d", CLASSES[:2], per_class=5, seed=15)
    taught = train(Settings(str(tmp_path / "d"), mode="finetune", epochs=2, blocks=2))
    assert taught.tuned_blocks == (4, 5) and taught.report()["settings"]["blocks"] == 2
    path, _ = saved.save(taught, tmp_path / "m.safetensors")
    stored = {k.split(".layers.")[1].split(".")[0] for k in load_file(str(path)) if k.startswith("backbone.")}
    assert stored == {"4", "5"}
    clf = load_classifier(str(path), "cpu")
    x = _batch(clf, [files[CLASSES[0]][0]])
    with torch.no_grad():
        assert torch.equal(clf.module(x), taught.module(x))
    with pytest.raises(TeachError, match="has 6 blocks"):
        train(Settings(str(tmp_path / "d"), mode="finetune", blocks=7))


def test_finetune_is_deterministic_for_a_seed(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:2], per_class=5, seed=5)
    a = train(Settings(str(tmp_path / "d"), mode="finetune", epochs=2, seed=1))
    b = train(Settings(str(tmp_path / "d"), mode="finetune", epochs=2, seed=1))
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


@pytest.mark.parametrize("mode", ["linear", "finetune"])
def test_an_embedded_backbone_needs_no_original_file(tmp_path, mode):
    write_class_folders(tmp_path / "d", CLASSES[:2], per_class=5, seed=6)
    ckpt = tmp_path / "mine.pth"
    torch.save(small_torchvision_vit(image_size=64, patch_size=16, num_layers=2).state_dict(), ckpt)
    taught = train(Settings(str(tmp_path / "d"), backbone=str(ckpt), mode=mode, epochs=2))
    assert not taught.backbone.catalog
    path, _ = saved.save(taught, tmp_path / "m.safetensors")
    ckpt.unlink()
    clf = load_classifier(str(path), "cpu")
    x = _batch(clf, sorted((tmp_path / "d" / CLASSES[0]).glob("*.png"))[:2])
    with torch.no_grad():
        assert torch.equal(clf.module(x), taught.module(x))
    state = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state["backbone.class_token"] = state["backbone.class_token"] + 1
    save_file(state, str(tmp_path / "tampered.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_classifier(str(tmp_path / "tampered.safetensors"), "cpu")
    pre = json.loads(meta["preprocessing"])
    del pre["input_size"]
    save_file(
        load_file(str(path)),
        str(tmp_path / "no_size.safetensors"),
        metadata=meta | {"preprocessing": json.dumps(pre)},
    )
    with pytest.raises(CheckpointError, match="preprocessing is not valid"):
        load_classifier(str(tmp_path / "no_size.safetensors"), "cpu")


def test_a_catalog_backbone_is_checked_by_its_hash(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:2], per_class=5, seed=7)
    path, _ = saved.save(train(Settings(str(tmp_path / "d"))), tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    ident = json.loads(meta["backbone"])
    assert ident["id"] == "demo-shapes" and ident["catalog"] and len(ident["sha256"]) == 64
    meta["backbone"] = json.dumps(ident | {"sha256": "0" * 64})
    save_file(load_file(str(path)), str(tmp_path / "other.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="not the ones it was taught on"):
        load_classifier(str(tmp_path / "other.safetensors"), "cpu")


# -- class-specific maps of a head that reads several blocks ---------------------------------------


def _relevance_of_taught(model: TaughtViT, x: torch.Tensor, target: int) -> np.ndarray:
    """Chefer et al. on a taught torchvision backbone written out with explicit attention and
    retained gradients: R = I, R ← R + E_h[(∇A ⊙ A)⁺]·R, the CLS row."""
    m = model.backbone
    attns, outs = [], []
    h = m._process_input(x)
    h = torch.cat([m.class_token.expand(1, -1, -1), h], dim=1) + m.encoder.pos_embedding
    for blk in m.encoder.layers:
        mha, y = blk.self_attention, blk.ln_1(h)
        b, n, d = y.shape
        hd = d // mha.num_heads
        q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, mha.num_heads, hd).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / hd**0.5, dim=-1)
        a.retain_grad()
        attns.append(a)
        h = h + mha.out_proj((a @ v).transpose(1, 2).reshape(b, n, d))
        h = h + blk.mlp(blk.ln_2(h))
        outs.append(h)
    feats = torch.cat(
        [torch.cat([outs[i][:, 0], outs[i][:, 1:].mean(1)], dim=1) for i in model.layers], dim=1
    )
    logits = model.head((feats - model.feature_mean) / model.feature_std)
    logits[0, target].backward()
    r = torch.eye(attns[0].shape[-1])
    for a in attns:
        r = r + (a.grad * a).clamp(min=0).mean(dim=1)[0] @ r
    return r[0, 1:].detach().numpy()


@pytest.mark.parametrize("recompute", [False, True])
def test_chefer_on_a_multilayer_head_equals_the_formula(recompute):
    backbone = small_torchvision_vit(image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64)
    model = TaughtViT(backbone, FeatureSpec((-3, -2, -1)), 5).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        model.head.weight.normal_(std=0.5)
        model.feature_std.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    got = ex.explain_module(model, x, "chefer", 3, recompute=recompute)
    want = _relevance_of_taught(copy.deepcopy(model), x, 3)
    assert np.abs(got.reshape(-1) - want).max() <= 1e-5
    assert np.ptp(want) > 1e-3
    # Without the earlier blocks' direct share, the map would differ: the check can fail.
    single = TaughtViT(copy.deepcopy(backbone), FeatureSpec((-1,)), 5)
    assert not np.allclose(ex.explain_module(single, x, "chefer", 3), got, atol=1e-4)


def test_every_map_works_on_a_taught_classifier(tmp_path):
    files = write_class_folders(tmp_path / "d", CLASSES[:3], per_class=5, seed=8)
    path, _ = saved.save(train(Settings(str(tmp_path / "d"), mode="multilayer")), tmp_path / "m.safetensors")
    clf = load_classifier(str(path), "cpu")
    (res,) = clf.classify([files[CLASSES[1]][0]])
    assert res.attention is not None and res.attention.cls.shape[0] == 6
    out = ex.explain_image(clf, files[CLASSES[1]][0], ("chefer", "gradcam", "attn-grad", "occlusion"),
                           targets=(1, 2))  # fmt: skip
    assert len(out) == 8
    for e in out:
        assert e.grid_map.shape == res.geometry.patch_grid and np.isfinite(e.grid_map).all()


# -- bad input --------------------------------------------------------------------------------------


def test_one_class_is_refused_and_an_empty_class_is_left_out(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:1], per_class=3, seed=9)
    with pytest.raises(TeachError, match="at least 2 class folders"):
        train(Settings(str(tmp_path / "d")))
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(TeachError, match="at least 2 class folders"):
        train(Settings(str(tmp_path / "d")))
    write_class_folders(tmp_path / "d", CLASSES[1:3], per_class=3, seed=9)
    taught = train(Settings(str(tmp_path / "d")))
    assert "empty" not in taught.classes
    assert any("'empty' holds no images" in w for w in taught.warnings)
    assert any("only 3 image(s)" in w for w in taught.warnings)


def test_unreadable_and_duplicate_images_are_reported_and_the_rest_taught(tmp_path):
    files = write_class_folders(tmp_path / "d", CLASSES[:2], per_class=6, seed=10)
    (tmp_path / "d" / CLASSES[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    shutil.copy(files[CLASSES[0]][0], tmp_path / "d" / CLASSES[1] / "copy.png")
    taught = train(Settings(str(tmp_path / "d")))
    assert taught.counts == {CLASSES[0]: 6, CLASSES[1]: 7} or taught.counts == {CLASSES[1]: 7, CLASSES[0]: 6}
    (broken,) = [p for p in taught.failures if p.endswith("broken.png")]
    assert "broken.png" in taught.failures[broken]
    assert any("copy.png" in w and "same image" in w for w in taught.warnings)


def test_a_backbone_that_cannot_be_loaded_is_one_line(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:2], per_class=3, seed=11)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    for backbone in (str(tmp_path / "junk.pth"), "no-such-model"):
        with pytest.raises(TeachError, match="could not be loaded") as info:
            train(Settings(str(tmp_path / "d"), backbone=backbone))
        assert "\n" not in str(info.value)


_FULL_CHILD = r"""
import json, resource, signal, sys
from vit_desktop.core.teach import saved
from vit_desktop.core.teach.train import Settings, train
taught = train(Settings(sys.argv[1]))
target, report = saved.save(taught, sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    saved.save(taught, target)
except saved.SaveError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_a_write_that_fails_keeps_the_old_files(tmp_path):
    """A real failing write (a file-size limit in a child process: the library's own error,
    not a stand-in) is one line, and the model and its report stay as they were."""
    import subprocess
    import sys

    write_class_folders(tmp_path / "d", CLASSES[:2], per_class=3, seed=12)
    target = tmp_path / "out" / "m.safetensors"
    proc = subprocess.run([sys.executable, "-c", _FULL_CHILD, str(tmp_path / "d"), str(target)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert "could not be saved" in error and "any old file is kept" in error and "\n" not in error
    before = load_file(str(target))
    assert before["head.weight"].shape[0] == 2  # the first save is whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.report.json", "m.safetensors"]
    assert json.loads((target.parent / "m.report.json").read_text())["classes"] == sorted(CLASSES[:2])


def test_a_class_whose_images_cannot_be_read_is_left_out(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:2], per_class=4, seed=14)
    (tmp_path / "d" / "zz-broken").mkdir()
    for i in range(3):
        (tmp_path / "d" / "zz-broken" / f"b{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    taught = train(Settings(str(tmp_path / "d")))
    assert taught.classes == tuple(sorted(CLASSES[:2])) and len(taught.confusion) == 2
    assert taught.module.head.out_features == 2 and taught.accuracy is not None
    assert any("'zz-broken': none of its images could be read" in w for w in taught.warnings)
    assert len(taught.failures) == 3
    with pytest.raises(TeachError, match="seed"):
        train(Settings(str(tmp_path / "d"), seed=-1))


def test_a_backbone_run_at_another_size_or_a_taught_one_is_refused(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:2], per_class=3, seed=13)
    ckpt = tmp_path / "mine.pth"
    torch.save(small_torchvision_vit(image_size=64, patch_size=16, num_layers=2).state_dict(), ckpt)
    clf = load_classifier(str(ckpt), "cpu")
    clf.set_input_size((96, 96))
    with pytest.raises(TeachError, match="not its trained 64×64 px"):
        train(Settings(str(tmp_path / "d")), classifier=clf)
    path, _ = saved.save(train(Settings(str(tmp_path / "d"))), tmp_path / "m.safetensors")
    with pytest.raises(TeachError, match="itself a taught classifier"):
        train(Settings(str(tmp_path / "d"), backbone=str(path)))
