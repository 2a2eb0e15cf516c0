"""``classify --engine ray`` on a Ray started on this machine (2 workers, the demo model), run
as a person runs it: a real process, killed half-way (SIGKILL), then the same command again.

The records must be the local engine's (same fields, top-k labels, probabilities within
1e-5, the same error records for broken files), and every image must have exactly one."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from PIL import Image

from tests.helpers import shape_file

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY,
    reason="Ray is not installed here (pip install 'vit-desktop[cluster]'); none for this platform?",
)
TOTAL = 200


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vit_desktop", "classify", *args]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray-photos")
    for i in range(TOTAL - 3):
        shape_file(d, label=i % 10, size=(80 + i % 7 * 16, 64 + i % 3 * 16), seed=i)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.webp").write_bytes(b"not an image at all")
    return d


@pytest.fixture(scope="module")
def killed_and_resumed(folder, tmp_path_factory):
    """The first run killed once some records are written; the rerun's result."""
    out_dir = tmp_path_factory.mktemp("ray-out")
    out, overlays = out_dir / "out.jsonl", out_dir / "overlays"
    args = [str(folder), "--engine", "ray", "--workers", "2", "--batch-size", "4", "--model", "demo-shapes",
            "--output", str(out), "--attention-out", str(overlays)]  # fmt: skip
    # Its own process group: the driver and the Ray it started (raylet, GCS) end together.
    proc = subprocess.Popen(
        _cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n"):
                break
            time.sleep(0.02)
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert alive, f"the run ended before it could be killed half-way: {err.decode(errors='replace')[-2000:]}"
    first = out.read_bytes().count(b"\n")
    again = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=300)
    return first, again, out, overlays


def _local_engine(paths: list[str]) -> dict[str, dict]:
    from vit_desktop.core import maps
    from vit_desktop.core.classifier import load_classifier

    clf = load_classifier("demo-shapes", device="cpu")
    attention = "full" if maps.DEFAULT_MAP.kind == "rollout" else "cls"  # what --attention-out asks for
    return {res.source: res.to_dict() for res in clf.iter_classify(paths, 8, 5, attention)}


@needs_ray
def test_a_killed_ray_run_rerun_classifies_every_image_exactly_once(killed_and_resumed, folder):
    first, again, out, overlays = killed_and_resumed
    assert 0 < first < TOTAL
    assert again.returncode == 1, again.stderr  # three broken files
    lines = again.stderr.splitlines()
    assert f"resuming: {first} images already in" in lines[0]
    assert lines[-1] == f"vit-desktop: {TOTAL - first} images, " + lines[-1].split(", ", 1)[1]
    assert lines[-1].endswith(", 2 workers (Ray)") and " images/s" in lines[-1]
    assert "Traceback" not in again.stderr
    rows = _records(out)
    counts = Counter(x["path"] for x in rows)
    assert len(rows) == TOTAL and set(counts.values()) == {1}
    assert set(counts) == {str(p) for p in folder.iterdir()}
    for x in rows:  # the workers wrote the overlays, at each image's own size
        if "error" in x:
            assert x["overlay_file"] is None
            continue
        assert os.path.dirname(x["overlay_file"]) == str(overlays)
        with Image.open(x["overlay_file"]) as im, Image.open(x["path"]) as src:
            assert im.size == src.size
    assert len(set(x["overlay_file"] for x in rows if "error" not in x)) == TOTAL - 3


@needs_ray
def test_the_ray_engine_gives_the_local_engines_records(killed_and_resumed, folder):
    *_, out, _ = killed_and_resumed
    rows = {x["path"]: x for x in _records(out)}
    ref = _local_engine(sorted(rows))
    errors = {p: x for p, x in rows.items() if "error" in x}
    assert sorted(os.path.basename(p) for p in errors) == ["broken.png", "empty.jpg", "text.webp"]
    for path, want in ref.items():
        got = dict(rows[path])
        overlay = got.pop("overlay_file")  # --attention-out: every record says which overlay is its
        assert set(got) == set(want), path
        if "error" in want:
            assert got == want and overlay is None  # the same error record, word for word
            continue
        assert [p["label"] for p in got["top_k"]] == [p["label"] for p in want["top_k"]], path
        assert [p["index"] for p in got["top_k"]] == [p["index"] for p in want["top_k"]], path
        assert max(abs(p["prob"] - q["prob"]) for p, q in zip(got["top_k"], want["top_k"])) <= 1e-5
        for key in ("path", "model", "device", "image_size", "crop_box", "patch_grid", "attention_peak"):
            assert got[key] == want[key], (path, key)


def test_without_ray_it_says_how_to_install_it(tmp_path):
    fake = tmp_path / "site" / "ray"  # an interpreter on which `import ray` fails
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    img = shape_file(tmp_path, 3, size=(64, 64))[0]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    r = subprocess.run(
        _cli(str(img), "--engine", "ray"), capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "pip install 'vit-desktop[cluster]'" in r.stderr, r.stderr
    r = subprocess.run(_cli(str(img), "--workers", "2"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == "vit-desktop: error: --workers is for --engine ray\n"


@needs_ray
def test_the_workers_add_the_local_engines_explanations_and_maps(tmp_path):
    import numpy as np

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        shape_file(imgs, label=i * 2, size=(96, 80), seed=i)
    runs = {}
    for engine in ("local", "ray"):
        out, maps = tmp_path / f"{engine}.jsonl", tmp_path / f"maps-{engine}"
        extra = ["--workers", "1"] if engine == "ray" else []
        r = subprocess.run(_cli(str(imgs), "--engine", engine, *extra, "--model", "demo-shapes", "--output", str(out),
                                "--explain", "chefer,rollout", "--target", "top1,top2", "--map-out", str(maps)),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        runs[engine] = {rec["path"]: rec for rec in _records(out)}
    assert runs["local"].keys() == runs["ray"].keys() and len(runs["ray"]) == 4
    for path, local in runs["local"].items():
        ours = runs["ray"][path]["explanations"]
        assert [(e["method"], e["target"]) for e in ours] == [
            (e["method"], e["target"]) for e in local["explanations"]
        ]
        for a, b in zip(ours, local["explanations"], strict=True):
            assert a["peak"] == b["peak"]
            np.testing.assert_allclose(np.load(a["map_file"]), np.load(b["map_file"]), rtol=1e-5, atol=1e-7)
    bad = subprocess.run(_cli(str(imgs), "--engine", "ray", "--model", "demo-shapes", "--explain", "chefer",
                              "--target", "no such class"), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no such class" in bad.stderr
