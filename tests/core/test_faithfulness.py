"""Deletion and insertion curves: every step against an image perturbed by hand and run alone,
the areas against the trapezoid rule, and a faithful map against its reverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_desktop.core.classifier import Classifier, load_classifier
from vit_desktop.core.demo.shapes import generate
from vit_desktop.core.explain import Cancelled, explain
from vit_desktop.core.faithfulness import Faithfulness, curves, fractions_for, map_order
from vit_desktop.core.preprocess import Preprocessing
from vit_desktop.core.tokenvit import TokenViT, TokenViTConfig


@pytest.fixture(scope="module")
def demo() -> Classifier:
    return load_classifier("demo-shapes", device="cpu")


def _batch(clf: Classifier, image) -> torch.Tensor:
    return torch.from_numpy(clf.prepare(image).array)[None]


def _probs(clf: Classifier, images: list[np.ndarray], target: int) -> np.ndarray:
    """Images (3, H, W) through the model in one batch of their own."""
    with torch.no_grad():
        logits = clf.module(torch.from_numpy(np.stack(images)).float())
    return torch.softmax(logits, dim=-1)[:, target].numpy()


def _prob(clf: Classifier, x: np.ndarray, target: int) -> float:
    return float(_probs(clf, [x], target)[0])


def _by_hand(x: np.ndarray, order: np.ndarray, count: int, cols: int, p: int, reveal: bool) -> np.ndarray:
    """Patches order[:count] set to 0 (deletion), or only they kept (insertion), one by one."""
    out = np.zeros_like(x) if reveal else x.copy()
    for idx in order[:count]:
        r, c = divmod(int(idx), cols)
        block = (slice(None), slice(r * p, (r + 1) * p), slice(c * p, (c + 1) * p))
        out[block] = x[block] if reveal else 0.0
    return out


def test_every_step_equals_the_image_perturbed_by_hand(demo, rng):
    batch = _batch(demo, generate(rng, label=8).image)
    x = batch[0].numpy()
    grid_map = rng.normal(size=(8, 8)).astype(np.float32)
    target = 8
    f = curves(demo, batch, grid_map, target, step=0.25, random_seed=3)
    assert f.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    full, blank = _prob(demo, x, target), _prob(demo, np.zeros_like(x), target)
    assert f.deletion[0] == pytest.approx(full, abs=1e-5) and f.insertion[-1] == pytest.approx(full, abs=1e-5)
    assert f.deletion[-1] == pytest.approx(blank, abs=1e-5) and f.insertion[0] == pytest.approx(
        blank, abs=1e-5
    )
    assert abs(full - blank) > 0.05  # the endpoints can tell the two apart
    order = np.argsort(-grid_map.ravel(), kind="stable")
    random = np.random.default_rng(3).permutation(64)
    got, made = [], []
    for k, frac in enumerate(f.fractions):
        n = round(frac * 64)
        for curve, o, reveal in ((f.deletion, order, False), (f.insertion, order, True),
                                 (f.random_deletion, random, False), (f.random_insertion, random, True)):  # fmt: skip
            got.append(curve[k])
            made.append(_by_hand(x, o, n, 8, 16, reveal))
    np.testing.assert_allclose(got, _probs(demo, made, target), atol=1e-5)


def test_the_areas_are_the_trapezoid_rule(demo, rng):
    batch = _batch(demo, generate(rng, label=2).image)
    f = curves(demo, batch, rng.random((8, 8)), 2, step=0.3)
    assert f.fractions.tolist() == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])  # the last step is shorter
    for name in ("deletion", "insertion", "random_deletion", "random_insertion"):
        y, x = getattr(f, name).astype(np.float64), f.fractions
        by_hand = sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))
        assert getattr(f, f"{name}_auc") == pytest.approx(by_hand, abs=1e-12)
        assert getattr(f, f"{name}_auc") == pytest.approx(float(np.trapezoid(y, x)), abs=1e-12)
    d = f.to_dict()
    assert d["deletion_auc"] == pytest.approx(f.deletion_auc, abs=1e-6) and len(d["insertion"]) == 5


def test_a_wide_grid_keeps_rows_and_columns_apart(rng):
    torch.manual_seed(0)
    model = TokenViT(TokenViTConfig(grid=(2, 3), patch_size=16, width=64, depth=2, heads=2, mlp_dim=128,
                                    num_classes=5)).eval()  # fmt: skip
    pre = Preprocessing(input_size=(32, 48), patch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, mode="squash")
    clf = Classifier(model, pre, list("abcde"), "tiny", "tiny", torch.device("cpu"))
    x = rng.normal(size=(3, 32, 48)).astype(np.float32)
    grid_map = np.zeros((2, 3), np.float32)
    grid_map[0, 2] = 1.0  # removed first: pixels rows 0-15, columns 32-47
    f = curves(clf, torch.from_numpy(x)[None], grid_map, 1, step=1 / 6)
    by_hand = x.copy()
    by_hand[:, :16, 32:] = 0.0
    assert f.deletion[1] == pytest.approx(_prob(clf, by_hand, 1), abs=1e-6)
    assert f.deletion[1] != pytest.approx(f.deletion[0], abs=1e-6)  # the step changed something
    revealed = np.zeros_like(x)
    revealed[:, :16, 32:] = x[:, :16, 32:]
    assert f.insertion[1] == pytest.approx(_prob(clf, revealed, 1), abs=1e-6)
    with pytest.raises(ValueError, match="does not tile"):
        curves(clf, torch.from_numpy(x)[None], grid_map.T, 1)


def test_the_occlusion_order_deletes_faster_than_its_reverse(demo):
    rng = np.random.default_rng(1)
    forward, reverse, random = [], [], []
    for label in range(3):
        batch = _batch(demo, generate(rng, label=label).image)
        occ = explain(demo, batch, "occlusion", label)
        f = curves(demo, batch, occ, label, step=0.2)
        r = curves(demo, batch, -occ, label, step=0.2, baseline=f)
        assert np.array_equal(r.random_deletion, f.random_deletion)  # the baseline was reused
        forward.append(f.deletion_auc)
        reverse.append(r.deletion_auc)
        random.append(f.random_deletion_auc)
    assert np.mean(forward) < np.mean(reverse) and np.mean(forward) < np.mean(random), (
        forward,
        reverse,
        random,
    )


def test_results_are_read_only_seeded_and_cancellable(demo, rng):
    batch = _batch(demo, generate(rng, label=5).image)
    grid_map = rng.random((8, 8))
    a = curves(demo, batch, grid_map, 5, step=0.5, random_seed=7)
    b = curves(demo, batch, grid_map, 5, step=0.5, random_seed=7)
    c = curves(demo, batch, grid_map, 5, step=0.5, random_seed=8)
    assert isinstance(a, Faithfulness) and a.random_seed == 7
    assert np.array_equal(a.random_deletion, b.random_deletion)
    assert not np.array_equal(a.random_deletion, c.random_deletion)
    for arr in (a.fractions, a.deletion, a.insertion, a.random_deletion, a.random_insertion):
        assert not arr.flags.writeable
    with pytest.raises(ValueError):
        a.deletion[0] = 1.0
    with pytest.raises(Cancelled):
        curves(demo, batch, grid_map, 5, step=0.5, cancel=lambda: True)
    with pytest.raises(ValueError, match="step"):
        fractions_for(0.0)
    with pytest.raises(ValueError, match="finite"):
        map_order(np.array([[np.nan, 1.0]]))
