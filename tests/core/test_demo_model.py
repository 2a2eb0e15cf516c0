"""The shipped demo model, measured on a fresh held-out set, and its training script."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo import model as demo_model
from vit_desktop.core.demo import samples, shapes
from vit_desktop.core.demo.evaluate import evaluate, evaluate_scenes, trained_on_scenes, training_recipe
from vit_desktop.core.demo.train import FINE_TUNE, FROM_SCRATCH, ShapeBatches, parse_args
from vit_desktop.core.demo.train import main as train_main
from vit_desktop.core.errors import CheckpointError
from vit_desktop.core.minivit import MiniViT
from vit_desktop.core.preprocess import prepare


@pytest.fixture(scope="module")
def demo():
    return load_classifier("demo-shapes", device="cpu")


def test_accuracy_and_attention_peak_on_fresh_held_out_images(demo):
    # Freshly drawn, with a seed of its own: neither the training streams nor the README's
    # measurement.  Fixed, so the test is deterministic rather than flaky at the margin.
    m = evaluate(demo, images=1000, seed=4242)
    assert m.accuracy >= 0.97, m
    assert m.peak_in_box >= 0.85, m


def test_shapes_generator_follows_the_spec():
    rng = np.random.default_rng(3)
    for _ in range(200):
        s = shapes.generate(rng)
        w, h = s.full_size
        assert 64 <= w <= 640 and 64 <= h <= 640 and 0.5 <= w / h <= 2.0
        left, top, right, bottom = s.bbox
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        # The nominal size (tip to tip) is 30–70% of the shorter side; a turned cross or
        # half disc spans a little more across its bounding box, never off the image.
        extent = max(right - left, bottom - top)
        assert 0.2 * min(w, h) <= extent <= 0.77 * min(w, h)
        assert s.image.size == (w, h)


def test_ellipses_are_elongated_and_circles_are_not():
    rng = np.random.default_rng(4)
    for label, lo, hi in ((0, 1.0, 1.05), (1, 1.9, 3.5)):
        for _ in range(20):
            pts = shapes._outline(label, 100.0, rng)[0]
            axes = np.linalg.svd(pts - pts.mean(0), compute_uv=False)
            assert lo <= axes[0] / axes[1] <= hi


def test_training_script_runs_and_is_reproducible(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.safetensors"
        args = ["--out", str(out), "--steps", "3", "--batch-size", "8", "--workers", "0",
                "--eval-every", "0", "--checkpoint-every", "0", "--log-every", "1", "--threads", "1"]  # fmt: skip
        assert train_main(args) == 0
        outs.append(load_file(str(out)))
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    clf = load_classifier(tmp_path / "a.safetensors", device="cpu")
    assert clf.labels == shapes.CLASSES


# -- masks, two-shape scenes, sample files ------------------------------------------------


def test_mask_leaves_the_image_unchanged_and_covers_the_drawn_shape():
    for seed in (5, 6):
        plain = [shapes.generate(np.random.default_rng(seed), max_side=m) for m in (None, 192)]
        masked = [
            shapes.generate(np.random.default_rng(seed), max_side=m, with_mask=True) for m in (None, 192)
        ]
        for a, b in zip(plain, masked):
            assert a.mask is None and (a.label, a.bbox, a.full_size) == (b.label, b.bbox, b.full_size)
            assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
            w, h = b.image.size
            assert b.mask.shape == (h, w) and b.mask.dtype == bool
            ys, xs = np.nonzero(b.mask)
            left, top, right, bottom = (v * b.scale for v in b.bbox)
            assert (
                left - 1 <= xs.min()
                and xs.max() <= right + 1
                and top - 1 <= ys.min()
                and ys.max() <= bottom + 1
            )
    rng = np.random.default_rng(7)
    for _ in range(10):
        # A disc's mask has the disc's area; a ring's has a hole at its centre.
        s = shapes.generate(rng, label=0, with_mask=True)
        r = (s.bbox[2] - s.bbox[0]) / 2
        assert abs(s.mask.sum() / (np.pi * r * r) - 1) < 0.05
        ring = shapes.generate(rng, label=3, with_mask=True)
        cx, cy = (ring.bbox[0] + ring.bbox[2]) / 2, (ring.bbox[1] + ring.bbox[3]) / 2
        assert not ring.mask[int(cy), int(cx)] and ring.mask.any()
        assert np.array_equal(ring.label_image(), ring.mask.astype(np.uint8) * 4)


def test_scenes_hold_two_different_shapes_apart_with_their_masks():
    rng = np.random.default_rng(8)
    for i in range(80):
        s = shapes.generate_scene(rng, max_side=192 if i % 2 else None)
        w, h = s.full_size
        a, b = s.labels
        assert a != b and s.scale == s.image.width / w
        assert s.image.size == (w, h) if i % 2 == 0 else max(s.image.size) <= 192
        assert all(m.shape == s.image.size[::-1] for m in s.masks)
        assert not (s.masks[0] & s.masks[1]).any()
        for box, mask in zip(s.bboxes, s.masks):
            left, top, right, bottom = box
            assert 0 <= left < right <= w + 1e-6 and 0 <= top < bottom <= h + 1e-6
            # Nominal size 25–45% of the shorter side; a box spans 0.75–1.12 of that.
            assert 0.18 * min(w, h) <= max(right - left, bottom - top) <= 0.51 * min(w, h)
            ys, xs = np.nonzero(mask)
            assert left * s.scale - 1 <= xs.min() and xs.max() <= right * s.scale + 1
        (l0, t0, r0, b0), (l1, t1, r1, b1) = s.bboxes
        gap = max(l1 - r0, l0 - r1, t1 - b0, t0 - b1)
        assert gap >= shapes.SCENE_GAP * min(w, h) - 1e-6
        lab = s.label_image()
        assert lab.shape == (h, w) and set(np.unique(lab)) == {0, a + 1, b + 1}
    one, two = (shapes.generate_scene(np.random.default_rng(9), labels=(8, 3)) for _ in range(2))
    assert one.names == ("star", "ring") and np.array_equal(np.asarray(one.image), np.asarray(two.image))
    with pytest.raises(ValueError, match="two different classes"):
        shapes.generate_scene(rng, labels=(2, 2))


def test_sample_files_are_deterministic_and_their_masks_follow_the_convention(tmp_path):
    a = samples.write_samples(tmp_path / "a", n=12, seed=11, two_shape_fraction=0.5)
    b = samples.write_samples(tmp_path / "b", n=12, seed=11, two_shape_fraction=0.5)
    assert [(s.labels, s.bboxes) for s in b] == [(s.labels, s.bboxes) for s in a]
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(names) == 25
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert sum(len(s.labels) == 2 for s in a) == 6
    assert {c for s in a for c in s.labels} == set(shapes.CLASSES)
    assert samples.read_samples(tmp_path / "a") == a
    for s in a:
        assert s.mask == samples.mask_path(s.image) and samples.is_mask_path(s.mask)
        img = np.asarray(Image.open(s.image).convert("RGB")).astype(float)
        per_class = samples.class_masks(samples.read_mask(s.mask))
        assert sorted(per_class) == sorted(s.indices) and img.shape[1::-1] == s.size
        inside_all = np.zeros(img.shape[:2], bool)
        for idx, box in zip(s.indices, s.bboxes):
            ys, xs = np.nonzero(per_class[idx])
            assert box[0] - 1 <= xs.min() and xs.max() <= box[2] + 1 and box[1] - 1 <= ys.min()
            inside_all |= per_class[idx]
        # The mask marks the drawn shape: its colour stands apart from the background's.
        fg, bg = img[inside_all].mean(0), img[~inside_all].mean(0)
        assert np.linalg.norm(fg - bg) > 30, s.image.name
    other = samples.write_samples(tmp_path / "c", n=4, seed=12, two_shape_fraction=0.5)
    assert (tmp_path / "c" / other[0].image.name).read_bytes() != (
        tmp_path / "a" / a[0].image.name
    ).read_bytes()


def test_sample_images_are_drawn_once_and_never_replace_other_files(tmp_path):
    first = samples.sample_images(tmp_path / "set", n=4)
    stamp = [s.image.stat().st_mtime_ns for s in first]
    assert samples.sample_images(tmp_path / "set", n=4) == first
    assert [s.image.stat().st_mtime_ns for s in first] == stamp
    assert min(min(s.size) for s in first) >= samples.SAMPLE_MIN_SIDE
    first[0].mask.unlink()  # a damaged set is drawn again
    again = samples.sample_images(tmp_path / "set", n=4)
    assert again == first and again[0].mask.is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        samples.sample_images(tmp_path / "mine", n=4)
    assert (tmp_path / "mine" / "photo.jpg").read_bytes() == b"x"


# -- fine-tuning on scenes ----------------------------------------------------------------


def test_scene_batches_have_soft_targets_and_no_scenes_keep_the_original_stream():
    x, y = next(iter(ShapeBatches(5, 24, 192, scene_fraction=0.5)))
    assert x.shape == (24, 3, 128, 128) and y.dtype == torch.float32 and y.shape == (24, len(shapes.CLASSES))
    assert torch.allclose(y.sum(1), torch.ones(24))
    kinds = sorted(int((row > 0).sum()) for row in y)
    assert set(kinds) == {1, 2} and all(set(row[row > 0].tolist()) in ({1.0}, {0.5}) for row in y)
    _, labels = next(iter(ShapeBatches(5, 6, 192)))
    rng = np.random.default_rng([5, 0])
    assert labels.tolist() == [shapes.generate(rng, max_side=192).label for _ in range(6)]


def test_fine_tune_from_the_shipped_weights_runs_and_is_reproducible(tmp_path):
    shipped = resources.files("vit_desktop.resources").joinpath("demo_shapes.safetensors")
    with resources.as_file(shipped) as init:
        init_state = load_file(str(init))
        digest = hashlib.sha256(init.read_bytes()).hexdigest()
        outs = []
        for name in ("a", "b"):
            out = tmp_path / f"{name}.safetensors"
            args = ["--init", str(init), "--scene-fraction", "0.5", "--lr", "3e-4", "--out", str(out),
                    "--steps", "3", "--batch-size", "8", "--workers", "0", "--eval-every", "0",
                    "--checkpoint-every", "0", "--log-every", "1", "--threads", "1"]  # fmt: skip
            assert train_main(args) == 0
            outs.append(load_file(str(out)))
    assert outs[0].keys() == outs[1].keys() == init_state.keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    assert any(not torch.equal(outs[0][k], init_state[k]) for k in outs[0])
    # Three steps of 3e-4 from the trained weights move the parameters by about 1e-3 (the
    # BatchNorm running statistics, not parameters, follow the batches).
    change = max(float((outs[0][k] - init_state[k]).abs().max()) for k in outs[0] if "running_" not in k)
    assert 0 < change < 0.01
    recipe = training_recipe(tmp_path / "a.safetensors")
    assert recipe["scene_fraction"] == 0.5 and recipe["init_sha256"] == digest
    assert trained_on_scenes(tmp_path / "a.safetensors")
    # Without options, --init switches to the fine-tune recipe (scenes on) and no --init
    # keeps the from-scratch one (no scenes: the shipped weights' first training).
    tuned, scratch = parse_args(["--init", "w.safetensors"]), parse_args([])
    assert (tuned.scene_fraction, tuned.steps) == (FINE_TUNE["scene_fraction"], FINE_TUNE["steps"])
    assert tuned.scene_fraction > 0 and scratch.scene_fraction == 0 and scratch.steps == FROM_SCRATCH["steps"]


def test_starting_from_a_file_of_another_shape_is_one_clear_error(tmp_path):
    bad = tmp_path / "other.safetensors"
    state = MiniViT(demo_model.CONFIG).state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["pos_embed"] = torch.zeros(1, 17, demo_model.CONFIG.embed_dim)
    save_file(state, str(bad))
    with pytest.raises(
        CheckpointError, match=r"other\.safetensors: tensor pos_embed has shape \(1, 17, 128\)"
    ):
        train_main(
            ["--init", str(bad), "--out", str(tmp_path / "x.safetensors"), "--steps", "1", "--workers", "0"]
        )
    assert not (tmp_path / "x.safetensors").exists()


def test_the_two_shape_metric_counts_top2_sets_like_a_direct_forward(demo):
    m = evaluate_scenes(demo, scenes=30, seed=77, batch=15)
    model = MiniViT(demo_model.CONFIG).eval()
    with resources.as_file(demo_model.weights_resource()) as f:
        model.load_state_dict(load_file(str(f)), strict=False)
    rng = np.random.default_rng([77, 2])
    drawn = [shapes.generate_scene(rng) for _ in range(30)]
    x = torch.from_numpy(np.stack([prepare(s.image, demo_model.PREPROCESSING)[0] for s in drawn]))
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1).indices.tolist()
    assert m.top2_match == sum(set(t) == set(s.labels) for t, s in zip(top2, drawn)) / 30
    assert m.top1_in_scene == sum(t[0] in s.labels for t, s in zip(top2, drawn)) / 30


@pytest.mark.skipif(
    not trained_on_scenes(),
    reason="the shipped demo weights were not trained on two-shape scenes (no scene_fraction in their "
    "training metadata); this test starts running once weights fine-tuned with --scene-fraction ship",
)
def test_two_shape_scenes_have_their_two_shapes_as_top2(demo):
    """On fresh two-shape scenes the top-2 predictions are the two shapes, on ≥ 80% of 200.

    Runs only when the shipped weights declare (safetensors metadata ``training``, written
    by ``train.py``) that they were trained with two-shape scenes: weights from before that
    retraining are skipped here, so the suite stays green until the retrained weights ship.
    """
    m = evaluate_scenes(demo, scenes=200, seed=4243)
    assert m.top2_match >= 0.80, m
