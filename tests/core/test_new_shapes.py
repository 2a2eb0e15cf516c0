"""New shape classes for teaching a head: drawn like the demo data, written as class folders."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vit_desktop.core.demo import new_shapes, shapes
from vit_desktop.core.demo.new_shapes import (
    NEW_CLASSES,
    generate_new,
    new_sample,
    write_class_folders,
    write_split,
)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_seed_gives_the_same_images_and_other_seeds_other_images():
    for label in range(len(NEW_CLASSES)):
        a = generate_new(label, np.random.default_rng(11), max_side=96)
        b = generate_new(label, np.random.default_rng(11), max_side=96)
        c = generate_new(label, np.random.default_rng(12), max_side=96)
        assert a.mode == "RGB" and max(a.size) <= 96
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert a.size != c.size or not np.array_equal(np.asarray(a), np.asarray(c))


def test_each_shape_covers_a_plausible_part_of_the_image():
    rng = np.random.default_rng(5)
    for label, name in enumerate(NEW_CLASSES):
        fractions = []
        for _ in range(25):
            image, mask = new_sample(label, rng, max_side=128)
            assert mask.shape == (image.height, image.width)
            ys, xs = np.nonzero(mask)
            # 30–70% of the shorter side tip to tip, fully inside the image.
            extent = max(np.ptp(xs), np.ptp(ys)) + 1
            assert 0.15 * min(mask.shape) <= extent <= 0.8 * min(mask.shape), name
            fractions.append(mask.mean())
            # The shape is drawn in a colour apart from the background.
            px = np.asarray(image, np.float32)
            assert np.linalg.norm(px[mask].mean(0) - px[~mask].mean(0)) > 30, name
        assert min(fractions) > 0.005 and max(fractions) < 0.5, (name, fractions)


def test_outlines_are_simple_polygons_and_not_demo_shapes():
    rng = np.random.default_rng(6)
    for label, name in enumerate(NEW_CLASSES):
        poly = new_shapes._outline(label, 200.0, rng)[0]
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        # A self-crossing outline fills a different area than its shoelace area.
        drawn = shapes._alpha([poly + 150.0], 300, 300).sum()
        assert drawn == pytest.approx(area, rel=0.03), name
        assert 120 <= np.ptp(poly, axis=0).max() <= 205, name
    axes = np.linalg.svd(new_shapes._outline(NEW_CLASSES.index("diamond"), 100.0, rng)[0], compute_uv=False)
    assert axes[0] / axes[1] > 1.4  # a rhombus, never the demo's square
    with pytest.raises(ValueError, match="unknown new class"):
        generate_new(len(NEW_CLASSES), np.random.default_rng(0))


def test_class_folders_layout_and_determinism(tmp_path):
    written = write_class_folders(tmp_path / "a", per_class=3, seed=2, max_side=96)
    assert list(written) == list(NEW_CLASSES[:4])
    for name, paths in written.items():
        assert paths == [tmp_path / "a" / name / f"{name}_{i}.png" for i in range(3)]
        for p in paths:
            with Image.open(p) as im:
                assert im.format == "PNG" and im.mode == "RGB"
                assert min(im.size) >= 64 and max(im.size) <= 96
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(NEW_CLASSES[:4])
    again = write_class_folders(tmp_path / "b", per_class=3, seed=2, max_side=96)
    other = write_class_folders(tmp_path / "c", per_class=3, seed=3, max_side=96)
    digests = [[_digest(p) for p in w["heart"]] for w in (written, again, other)]
    assert digests[0] == digests[1] and not set(digests[0]) & set(digests[2])
    # A class's images do not depend on which other classes are written with it.
    alone = write_class_folders(tmp_path / "d", classes=["heart"], per_class=3, seed=2, max_side=96)
    assert [_digest(p) for p in alone["heart"]] == digests[0]


def test_split_draws_train_and_test_from_disjoint_streams(tmp_path):
    split = write_split(
        tmp_path, ["arrow", "diamond"], train_per_class=4, test_per_class=2, seed=0, max_side=80
    )
    assert set(split) == {"train", "test"}
    for part, n in (("train", 4), ("test", 2)):
        assert sorted(p.name for p in (tmp_path / part).iterdir()) == ["arrow", "diamond"]
        assert all(len(split[part][c]) == n for c in ("arrow", "diamond"))
    train = {_digest(p) for paths in split["train"].values() for p in paths}
    test = {_digest(p) for paths in split["test"].values() for p in paths}
    assert len(train) == 8 and len(test) == 4 and not train & test


def test_bad_arguments_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown class 'blob'"):
        write_class_folders(tmp_path, classes=["heart", "blob"], per_class=1)
    with pytest.raises(ValueError, match="per_class"):
        write_class_folders(tmp_path, per_class=0)
    with pytest.raises(ValueError, match="min_side"):
        write_class_folders(tmp_path, per_class=1, min_side=100, max_side=80)


def test_command_line_writes_the_folders(tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(out), "--per-class", "2", "--classes", "heart,crescent", "--seed", "1", "--max-side", "80"]
    assert new_shapes.main(args) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["crescent", "heart"]
    assert sorted(p.name for p in (out / "heart").iterdir()) == ["heart_0.png", "heart_1.png"]
    assert new_shapes.main([str(out), "--classes", "heart,moon"]) == 2
    err = capsys.readouterr().err.strip()
    assert "moon" in err and "\n" not in err


def _confident_single_class(clf, images) -> float:
    """Share of images the model puts, with probability > 0.7, in its most common class."""
    results = clf.classify(images, attention=False)
    common = Counter(r.top1.label for r in results).most_common(1)[0][0]
    return float(np.mean([r.top1.label == common and r.probs.max() > 0.7 for r in results]))


def test_the_demo_model_does_not_already_know_the_new_classes():
    from vit_desktop.core.classifier import load_classifier

    clf = load_classifier("demo-shapes", device="cpu")
    # The measure tells a known class: the demo's own shapes, drawn the same way, pass it.
    rng = np.random.default_rng(21)
    for label in (4, 9):  # triangle, cross
        known = [shapes.generate(rng, label=label, max_side=128).image for _ in range(24)]
        assert _confident_single_class(clf, known) >= 0.8
    for label, name in enumerate(NEW_CLASSES):
        rng = np.random.default_rng([21, label])
        images = [generate_new(label, rng, max_side=128) for _ in range(24)]
        assert _confident_single_class(clf, images) < 0.8, name
