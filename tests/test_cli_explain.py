"""``classify --explain`` and ``evaluate-maps`` with the demo model on generated shapes, and the
mask scores ``evaluate-maps`` is built on, each checked by a second route."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit_desktop import cli_maps
from vit_desktop.cli import run_cli
from vit_desktop.core import explain as explain_api
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo.samples import mask_path, write_samples
from vit_desktop.core.demo.shapes import generate
from vit_desktop.core.faithfulness import curves
from vit_desktop.core.map_eval import coverage, iou, pointing_hit


@pytest.fixture(scope="module")
def clf():
    return load_classifier("demo-shapes", device="cpu")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(11)
    paths = []
    for label in (3, 8):
        paths.append(str(d / f"{label}.png"))
        generate(rng, label=label).image.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scenes")
    write_samples(d, 3, 5, 0.67)
    (d / "zz-broken.png").write_bytes(b"not a png")
    return d


def _seen(labels: np.ndarray, geom) -> np.ndarray:
    """A label image on the model's letterboxed input, through Pillow (nearest neighbour)."""
    h, w = labels.shape
    rw, rh = round(w * geom.scale[0]), round(h * geom.scale[1])
    small = np.array(Image.fromarray(labels).resize((rw, rh), Image.Resampling.NEAREST))
    seen = np.zeros(geom.input_size[::-1], np.uint8)
    ox, oy = geom.offset
    seen[-oy : -oy + rh, -ox : -ox + rw] = small
    return seen


def _block(grid_map: np.ndarray, cell: tuple[int, int] | None = None) -> np.ndarray:
    """The model-input pixels of one patch (default: the map's highest) as a boolean image."""
    one = np.zeros(grid_map.shape, bool)
    one[cell or np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)] = True
    return np.kron(one, np.ones((16, 16), bool))


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_cli(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_method_names_are_the_explanation_api_s():
    assert cli_maps.METHOD_NAMES == explain_api.METHODS


def test_classify_explain_adds_explanations_and_writes_the_raw_maps(clf, shapes, tmp_path, capsys):
    code, plain, _ = _cli(capsys, "classify", *shapes, "--model", "demo-shapes", "--format", "json")
    assert code == 0
    out_dir = tmp_path / "maps"
    code, out, err = _cli(capsys, "classify", *shapes, "--model", "demo-shapes", "--explain",
                          "chefer,rollout", "--target", "top2,circle,7", "--map-out", str(out_dir))  # fmt: skip
    assert code == 0, err
    for before, after in zip(_lines(plain), _lines(out), strict=True):
        explanations = after.pop("explanations")
        before.pop("latency_ms")
        after.pop("latency_ms")
        assert after == before  # every existing field as it was
        wanted = list(dict.fromkeys([after["top_k"][1]["index"], 0, 7]))
        assert [(e["method"], e["target"]["index"]) for e in explanations] == [
            (m, t) for m in ("chefer", "rollout") for t in wanted
        ]
        prepared = clf.prepare(after["path"])
        batch = torch.from_numpy(prepared.array)[None]
        rollout_files = set()
        for e in explanations:
            t = e["target"]["index"]
            assert e["target"]["label"] == clf.labels[t]
            grid = np.load(e["map_file"])
            assert grid.dtype == np.float32 and list(grid.shape) == after["patch_grid"]
            expected = explain_api.explain(clf, batch, e["method"], t)
            np.testing.assert_allclose(grid, expected, rtol=1e-5, atol=1e-6)
            r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
            assert e["peak"] == pytest.approx(prepared.geometry.patch_center(r, c), abs=0.051)
            if e["method"] == "rollout":
                rollout_files.add(e["map_file"])
            else:
                assert e["map_file"].endswith(f".{e['method']}.{t}.npy")
        assert len(rollout_files) == 1  # a class-agnostic map is written once per image
        assert len(list(out_dir.glob(Path(after["path"]).stem + ".*.npy"))) == len(wanted) + 1


def test_explain_without_a_target_explains_the_top_class(shapes, capsys):
    code, out, err = _cli(capsys, "classify", shapes[0], "--model", "demo-shapes", "--explain", "gradcam")
    assert code == 0, err
    (row,) = _lines(out)
    (e,) = row["explanations"]
    assert e["method"] == "gradcam" and e["target"]["index"] == row["top_k"][0]["index"]
    assert "map_file" not in e


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--explain", "chefer,lime"], "unknown explanation method 'lime'"),
        (["--explain", "chefer", "--target", "dog"], "unknown target 'dog'"),
        (["--explain", "chefer", "--target", "top11"], "top11"),
        (["--target", "top1"], "--target needs --explain"),
        (["--explain", "chefer", "--format", "csv"], "JSON lines"),
        (["--explain", "chefer", "--map-out", "{file}/maps"], "--map-out"),
    ],
)
def test_bad_explain_options_are_one_line(shapes, tmp_path, capsys, extra, says):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    extra = [x.replace("{file}", str(a_file)) for x in extra]
    code, out, err = _cli(capsys, "classify", shapes[0], "--model", "demo-shapes", *extra)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, err


def test_evaluate_maps_scores_the_scenes_and_goes_past_a_broken_image(clf, scenes, capsys):
    code, out, err = _cli(capsys, "evaluate-maps", str(scenes), "--model", "demo-shapes", "--methods",
                          "rollout,chefer", "--step", "0.5", "--json")  # fmt: skip
    assert code == 1  # the broken image
    assert len(err.strip().splitlines()) == 1 and "zz-broken.png" in err, err
    got = json.loads(out)
    manifest = json.loads((scenes / "samples.json").read_text())["images"]
    pairs = [(scenes / m["image"], i) for m in manifest for i in m["indices"]]
    assert got["images"] == got["images_with_masks"] == 3 and got["failed"] == 1
    assert got["images_with_two_or_more_classes"] == sum(len(m["indices"]) == 2 for m in manifest) >= 1
    assert set(got["methods"]) == {"rollout", "chefer"}
    deletion, hits = [], []
    for path, t in pairs:  # chefer's scores again, through the single-map API
        prepared = clf.prepare(str(path))
        batch = torch.from_numpy(prepared.array)[None]
        grid = explain_api.explain(clf, batch, "chefer", t)
        deletion.append(curves(clf, batch, grid, t, step=0.5).deletion_auc)
        seen = _seen(np.array(Image.open(mask_path(path))), prepared.geometry)
        hits.append(bool((seen[_block(grid)] == t + 1).any()))
    chefer = got["methods"]["chefer"]
    assert chefer["pairs"] == chefer["mask_pairs"] == len(pairs)
    assert chefer["deletion_auc"] == pytest.approx(np.mean(deletion), abs=1e-5)
    assert chefer["pointing"] == pytest.approx(np.mean(hits), abs=1e-6)
    for row in (*got["methods"].values(), got["random"]):
        assert 0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0
    assert got["random"]["miou"] is None and 0.0 <= got["methods"]["rollout"]["miou"] <= 1.0

    code, out, err = _cli(capsys, "evaluate-maps", str(scenes / "01-*.png"), "--model", "demo-shapes",
                          "--methods", "attn-grad", "--step", "1")  # fmt: skip
    assert code == 0, err
    table = out.splitlines()
    assert table[1].split() == ["method", "pairs", "deletion", "AUC", "insertion", "AUC", "pointing", "mIoU"]
    assert table[2].split()[0] == "attn-grad" and table[3].split()[0] == "random"


def test_coverage_follows_the_letterbox_geometry(clf):
    # 256×128 letterboxed to 128×128: scale 0.5, 32 px of padding above and below.
    prepared = clf.prepare(Image.new("RGB", (256, 128)))
    geom = prepared.geometry
    labels = np.zeros((128, 256), np.uint8)
    labels[0:32, 96:128] = 4  # one whole patch of class 3
    labels[0:16, 128:160] = 6  # the top half of its right-hand neighbour, class 5
    cover = coverage(labels, geom)
    assert set(cover) == {3, 5}
    whole = geom.patch_at(112, 16)
    half = geom.patch_at(144, 8)
    assert cover[3][whole] == 1.0 and cover[3].sum() == 1.0
    assert cover[5][half] == 0.5 and cover[5].sum() == 0.5
    with pytest.raises(ValueError, match="mask is"):
        coverage(labels.T, geom)


def test_iou_equals_the_pixel_iou_of_the_map_drawn_as_blocks(clf, rng):
    image = Image.fromarray(rng.integers(0, 255, (150, 220, 3), dtype=np.uint8))
    geom = clf.prepare(image).geometry
    labels = np.zeros((150, 220), np.uint8)
    labels[20:110, 40:170] = 2
    labels[115:140, 5:30] = 2
    cover = coverage(labels, geom)[1]
    shape = _seen(labels, geom) == 2  # the second route: Pillow's resize, the map drawn as blocks
    hits = 0
    for _ in range(5):
        grid_map = rng.random((8, 8))
        chosen = np.kron(grid_map > grid_map.mean(), np.ones((16, 16), bool))
        assert iou(grid_map, cover) == pytest.approx(
            (chosen & shape).sum() / (chosen | shape).sum(), abs=1e-9
        )
        hit = bool(shape[_block(grid_map)].any())
        assert pointing_hit(grid_map, cover) == hit
        hits += hit
    assert 0 < hits < 5  # both outcomes were checked
    assert iou(np.ones((8, 8)), cover) == 0.0  # a flat map selects nothing
