"""``vit-desktop train`` end to end in a real process: the JSON it prints, the files it
writes, ``classify --model`` on the result, and one line for bad input."""

from __future__ import annotations

import json

from tests.test_cli import run
from vit_desktop.core.demo.new_shapes import write_class_folders

CLASSES = ("heart", "arrow", "crescent")


def test_train_then_classify_with_the_taught_model(tmp_path):
    files = write_class_folders(tmp_path / "d", CLASSES, per_class=6, seed=21)
    out = tmp_path / "mine.safetensors"
    env = {"VIT_DESKTOP_FEATURE_CACHE": str(tmp_path / "cache")}
    r = run(
        "train", str(tmp_path / "d"), "--backbone", "demo-shapes", "--out", str(out), "--seed", "2", env=env
    )
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    for key in ("classes", "counts", "accuracy", "per_class_accuracy", "confusion", "seconds"):
        assert key in obj
    assert obj["classes"] == sorted(CLASSES) and obj["counts"] == dict.fromkeys(sorted(CLASSES), 6)
    assert sum(map(sum, obj["confusion"])) == 18  # 6 per class < 10: every image scored by k-fold
    assert obj["model"] == str(out) and out.is_file()
    report = json.loads((tmp_path / "mine.report.json").read_text())
    assert report["accuracy"] == obj["accuracy"] and report["settings"]["seed"] == 2
    r = run("classify", "--model", str(out), "--format", "json", str(files["arrow"][0]), env=env)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    assert {p["label"] for p in rec["top_k"]} <= set(CLASSES)


def test_train_bad_input_is_one_line(tmp_path):
    write_class_folders(tmp_path / "d", CLASSES[:1], per_class=2, seed=22)
    r = run("train", str(tmp_path / "d"), "--out", str(tmp_path / "x.safetensors"))
    assert r.returncode == 2 and not (tmp_path / "x.safetensors").exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "at least 2 class folders" in lines[0]
    r = run("train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.safetensors"))
    assert r.returncode == 2 and "no such folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
