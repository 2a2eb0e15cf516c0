"""The command line, run as a person runs it: a real process, real files, the demo model."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vit_desktop.core.demo.shapes import generate


def run(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "vit_desktop", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list]:
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    samples = []
    for i in range(6):
        s = generate(rng, label=i)
        name = f"{i:02d}_{s.name}.png" if i % 2 else f"{i:02d}_{s.name}.jpg"
        s.image.save(d / name, quality=95)
        samples.append((name, s))
    (d / "broken.jpg").write_bytes(b"this is not a jpeg")
    (d / "notes.txt").write_text("not an image, skipped quietly")
    sub = d / "sub"
    sub.mkdir()
    generate(rng, label=8).image.save(sub / "deep.png")
    return d, samples


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_classify_folder_json_with_a_broken_file(folder):
    d, samples = folder
    r = run("classify", str(d), "--format", "json", "--model", "demo-shapes")
    assert r.returncode == 1, r.stderr
    rows = _json_lines(r.stdout)
    assert len(rows) == 7  # 6 good + the broken one; notes.txt skipped, sub/ not walked
    bad = [x for x in rows if "error" in x]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.jpg")
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    good = [x for x in rows if "error" not in x]
    for x in good:
        assert set(x) >= {"path", "model", "device", "top_k", "latency_ms", "image_size", "crop_box",
                          "patch_grid", "attention_peak"}  # fmt: skip
        assert x["model"] == "demo-shapes" and x["device"] == "cpu"
        assert len(x["top_k"]) == 5 and {"label", "index", "prob"} <= set(x["top_k"][0])
        probs = [p["prob"] for p in x["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        with Image.open(x["path"]) as im:
            w, h = im.size
        assert x["image_size"] == [w, h]
        left, top, right, bottom = x["crop_box"]
        px, py = x["attention_peak"]
        assert left <= px <= right and top <= py <= bottom
        assert x["patch_grid"] == [8, 8]


def test_recursive_and_top_k(folder):
    d, _ = folder
    r = run("classify", str(d), "--recursive", "--top-k", "2", "--format", "json", "--no-attention")
    rows = [x for x in _json_lines(r.stdout) if "error" not in x]
    assert any(x["path"].endswith("deep.png") for x in rows)
    assert all(len(x["top_k"]) == 2 and x["attention_peak"] is None for x in rows)


def test_csv_output_file(folder, tmp_path):
    d, _ = folder
    out = tmp_path / "res.csv"
    r = run("classify", str(d / "01_ellipse.png"), "--format", "csv", "--output", str(out), "--top-k", "3")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    assert rows[0]["path"].endswith("01_ellipse.png") and float(rows[0]["prob"]) > 0


def test_table_format(folder):
    d, _ = folder
    r = run("classify", str(d / "00_circle.jpg"), "--format", "table")
    assert r.returncode == 0 and "00_circle.jpg" in r.stdout and "%" in r.stdout


def test_attention_out_writes_overlays_at_original_resolution(folder, tmp_path):
    d, samples = folder
    out = tmp_path / "overlays"
    name, s = samples[3]
    r = run("classify", str(d / name), "--attention-out", str(out), "--format", "json")
    assert r.returncode == 0, r.stderr
    png = out / (Path(name).stem + ".overlay.png")
    with Image.open(png) as im:
        assert im.size == s.image.size
        diff = np.abs(np.asarray(im.convert("RGB"), int) - np.asarray(s.image, int)).mean()
    assert diff > 5  # the heat map is really drawn over it


def test_non_utf8_and_long_names(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    img = generate(np.random.default_rng(1), label=5).image
    img.save(d / ("x" * 200 + ".png"))
    expected = 1
    if os.name == "posix":  # byte file names that are not UTF-8 exist only there
        weird = os.fsencode(d) + b"/caf\xe9.png"
        with open(weird, "wb") as f:
            img.save(f, format="PNG")
        expected = 2
    r = run("classify", str(d), "--format", "json", "--no-attention")
    rows = _json_lines(r.stdout)
    assert r.returncode == 0, r.stderr
    assert len(rows) == expected and all("top_k" in x for x in rows)


def test_missing_file_exit_1_and_others_go_on(folder, tmp_path):
    d, _ = folder
    r = run("classify", str(tmp_path / "nope.jpg"), str(d / "00_circle.jpg"), "--format", "json")
    assert r.returncode == 1
    rows = _json_lines(r.stdout)
    assert "no such file" in rows[0]["error"] and "top_k" in rows[1]


def test_usage_and_model_errors_exit_2_with_one_line(tmp_path, folder):
    d, _ = folder
    for args, needle in [
        (("classify",), "required"),
        (("classify", str(d), "--top-k", "0"), "top-k"),
        (("classify", str(d), "--model", "vit-x-99"), "no model called"),
        (("classify", str(d), "--model", str(tmp_path / "missing.pth")), "no such file"),
        (("classify", str(d), "--device", "cuda"), "CUDA"),
    ]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_offline_download_error(tmp_path):
    r = run("classify", str(tmp_path), "--model", "vit-b-16", "--offline")
    assert r.returncode == 2
    assert "vit_b_16-c867db91.pth" in r.stderr and "by hand" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_models_json():
    r = run("models", "--json")
    assert r.returncode == 0
    items = json.loads(r.stdout)
    ids = {x["id"] for x in items}
    assert {"demo-shapes", "vit-b-16", "vit-b-32", "vit-l-16", "vit-l-32", "vit-h-14-swag-e2e",
            "vit-b-16-swag-e2e", "vit-l-16-swag-linear"} <= ids  # fmt: skip
    for x in items:
        assert {
            "id",
            "display_name",
            "params",
            "input_size",
            "patch_size",
            "num_classes",
            "downloaded",
        } <= set(x)
    demo = next(x for x in items if x["id"] == "demo-shapes")
    assert demo["downloaded"] is True and demo["num_classes"] == 10
    h14 = next(x for x in items if x["id"] == "vit-h-14-swag-e2e")
    assert h14["input_size"] == 518 and h14["patch_grid"] == [37, 37] and h14["downloaded"] is False


def test_models_table_marks_cache(tmp_path):
    r = run("models")
    assert r.returncode == 0 and "demo-shapes" in r.stdout and "cache:" in r.stdout


def test_no_display_says_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    for extra in ([], ["photo.jpg"]):  # plain start, and "Open with" from a file manager
        r = subprocess.run(
            [sys.executable, "-m", "vit_desktop", *extra], capture_output=True, text=True, env=env, timeout=60
        )
        assert r.returncode == 2
        assert "no display" in r.stderr and "vit-desktop classify" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_default_model_prefers_cached_vit_b16(tmp_path, monkeypatch):
    from vit_desktop.core import catalog, weights
    from vit_desktop.core.classifier import default_model_id

    assert default_model_id() == "demo-shapes"
    path = weights.cached_path(catalog.get("vit-b-16"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    assert default_model_id() == "vit-b-16"


def test_undecodable_name_that_fails_is_reported_not_fatal(tmp_path):
    if os.name != "posix":
        return  # byte file names that are not UTF-8 exist only on POSIX
    d = tmp_path / "bad"
    d.mkdir()
    with open(os.fsencode(d) + b"/bro\xefken.jpg", "wb") as f:
        f.write(b"not a jpeg")
    generate(np.random.default_rng(3), label=1).image.save(d / "ok.png")
    out = tmp_path / "o.csv"
    r = run("classify", str(d), "--format", "csv", "--output", str(out), "--no-attention")
    assert r.returncode == 1, r.stderr
    text = out.read_text(encoding="utf-8")
    assert "ok.png" in text and "bro\\udcefken.jpg" in text


def test_checkpoint_with_a_labels_file(folder, tmp_path):
    import torch

    from tests.helpers import small_torchvision_vit as _tv

    torch.save(_tv(hidden_dim=192, num_heads=3, num_classes=3).state_dict(), tmp_path / "net.pth")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    path = next(p for p in sorted(folder[0].iterdir()) if p.suffix == ".png")
    r = run(
        "classify", str(path), "--model", str(tmp_path / "net.pth"), "--labels", str(names), "--top-k", "3"
    )
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert {p["label"] for p in row["top_k"]} == {"cat", "dog", "bird"}
    names.write_text("cat\ndog\n")
    r = run("classify", str(path), "--model", str(tmp_path / "net.pth"), "--labels", str(names))
    assert r.returncode == 2 and "2 labels but" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- --attention-out: new files only, the next free name, short names, which overlay is whose --------


def test_attention_out_never_writes_through_a_link_nor_over_a_file(tmp_path):
    img = tmp_path / "cat.png"
    generate(np.random.default_rng(4), label=2, size=(300, 200)).image.save(img)
    out, victims = tmp_path / "out", tmp_path / "victims"
    out.mkdir()
    victims.mkdir()
    kept = victims / "kept.txt"
    kept.write_text("keep me")
    (out / "cat.overlay.png").symlink_to(victims / "created.png")  # a planted link to nowhere yet
    (out / "cat-1.overlay.png").symlink_to(kept)  # and one to someone's file
    for n in range(2, 1000):  # 1,000 names taken: the next is used, none is overwritten
        (out / f"cat-{n}.overlay.png").write_text(f"mine {n}")
    r = run("classify", str(img), "--attention-out", str(out), "--format", "json", "--no-attention")
    assert r.returncode == 0, r.stderr
    assert _json_lines(r.stdout)[0]["overlay_file"] is None  # no attention: no overlay, and it says so
    r = run("classify", str(img), "--attention-out", str(out), "--format", "json")
    assert r.returncode == 0, r.stderr
    row = _json_lines(r.stdout)[0]
    assert list(row)[-1] == "overlay_file" and row["overlay_file"] == str(out / "cat-1000.overlay.png")
    with Image.open(row["overlay_file"]) as im:
        assert im.size == (300, 200)
    assert not (victims / "created.png").exists() and kept.read_text() == "keep me"
    assert (out / "cat.overlay.png").is_symlink() and (out / "cat-1.overlay.png").is_symlink()
    assert (out / "cat-999.overlay.png").read_text() == "mine 999"
    assert len(list(out.iterdir())) == 1001


def test_attention_out_shortens_long_names_and_says_which_overlay_is_whose(tmp_path):
    d, out = tmp_path / "long", tmp_path / "out"
    d.mkdir()
    stem = "é" * 122  # 244 bytes: NAME.overlay.png would be over the 255-byte limit
    sizes = {f"{stem}a.png": (320, 180), f"{stem}b.png": (200, 260), "short.png": (240, 240)}
    for i, (name, size) in enumerate(sizes.items()):
        generate(np.random.default_rng(i), label=i, size=size).image.save(d / name)
    res = tmp_path / "res.csv"
    r = run("classify", str(d), "--attention-out", str(out), "--format", "csv", "--output", str(res))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(res.read_text(encoding="utf-8"))))
    assert list(rows[0])[-1] == "overlay_file"
    whose = {Path(row["path"]).name: row["overlay_file"] for row in rows}
    assert set(whose) == set(sizes) and len(set(whose.values())) == 3
    assert whose["short.png"] == str(out / "short.overlay.png")
    for name, overlay in whose.items():
        assert Path(overlay).parent == out and len(os.fsencode(Path(overlay).name)) <= 140
        with Image.open(overlay) as im:
            assert im.size == sizes[name]  # the overlay of that image, not of another one
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(v).name for v in whose.values())
    assert all(Path(v).name.startswith("é" * 50) for k, v in whose.items() if k != "short.png")


def test_overlay_that_cannot_be_written_keeps_the_result_and_says_why(folder, tmp_path):
    d, samples = folder
    out = tmp_path / "o"
    while len(os.fsencode(out)) < 4080:  # a folder whose files' paths are over PATH_MAX (4096)
        out = out / ("d" * min(200, 4090 - len(os.fsencode(out)) - 1))
    r = run("classify", str(d / samples[1][0]), "--attention-out", str(out), "--format", "json")
    assert r.returncode == 1
    row = _json_lines(r.stdout)[0]
    assert row["top_k"] and row["overlay_file"] is None  # classified all the same
    assert len(r.stderr.strip().splitlines()) == 1 and "could not write the overlay" in r.stderr
    assert samples[1][0] in r.stderr and not list(out.iterdir())


def test_records_without_attention_out_have_no_overlay_field(folder):
    d, samples = folder
    r = run("classify", str(d / samples[0][0]), str(d / "broken.jpg"), "--format", "json")
    rows = _json_lines(r.stdout)
    assert len(rows) == 2 and all("overlay_file" not in x for x in rows)
    assert list(rows[0]) == ["path", "model", "device", "top_k", "latency_ms", "image_size", "crop_box",
                             "patch_grid", "attention_peak"]  # fmt: skip


def test_a_plain_http_weights_mirror_is_warned_about_when_a_download_starts(folder):
    from tests.helpers import serving

    d, samples = folder
    with serving() as srv:  # serves a file that is not ViT-B/16's: refused by its hash
        mirror = {"VIT_DESKTOP_WEIGHTS_URL": f"http://127.0.0.1:{srv.server_address[1]}/ok"}
        r = run("classify", str(d / samples[0][0]), "--model", "vit-b-16", env=mirror)
        assert r.returncode == 2 and srv.hits == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 2 and "plain http" in lines[0] and "use https" in lines[0]
        assert "does not match its published hash" in lines[1]
        r = run("classify", str(d / samples[0][0]), "--model", "vit-b-16", "--offline", env=mirror)
        assert r.returncode == 2 and "plain http" not in r.stderr and srv.hits == 1  # no download: no warning


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_labels_pipe_is_refused_at_once_not_waited_on(folder, tmp_path):
    """A FIFO as NAME.labels.txt (or given with --labels) used to block the run forever."""
    import torch

    from tests.helpers import small_torchvision_vit as _tv

    torch.save(_tv(hidden_dim=192, num_heads=3, num_classes=3).state_dict(), tmp_path / "net.pth")
    os.mkfifo(tmp_path / "net.labels.txt")
    os.mkfifo(tmp_path / "chosen.txt")
    path = next(p for p in sorted(folder[0].iterdir()) if p.suffix == ".png")
    for extra, name in (([], "net.labels.txt"), (["--labels", str(tmp_path / "chosen.txt")], "chosen.txt")):
        r = run("classify", str(path), "--model", str(tmp_path / "net.pth"), *extra, timeout=90)
        assert r.returncode == 2 and r.stdout == "", r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{name} is a pipe, not a regular file" in lines[0], r.stderr
