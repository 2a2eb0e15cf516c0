"""A GPU that runs out of memory (simulated, no CUDA needed): the classifier moves to the CPU,
says so once, and the results are the CPU's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import every_classifier_on_a_full_gpu, pretend_gpu_that_is_full
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo.shapes import generate
from vit_desktop.core.errors import DeviceError


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(21)
    return [generate(rng, label=i, size=(200, 150)).image for i in range(4)]


def test_out_of_memory_falls_back_to_the_cpu_with_one_notice(images):
    reference = load_classifier("demo-shapes", device="cpu").classify(images, attention="full")
    clf = load_classifier("demo-shapes", device="cpu")
    seen = pretend_gpu_that_is_full(clf)
    first = clf.classify(images[:2], attention="full")
    second = clf.classify(images[2:], attention="full")
    assert seen[:2] == ["meta", "cpu"] and set(seen[2:]) == {"cpu"}  # tried the GPU once, then CPU
    assert clf.device.type == "cpu"
    assert len(clf.notices) == 1 and "ran out of memory" in clf.notices[0] and "CPU" in clf.notices[0]
    for got, ref in zip(first + second, reference):
        assert got.device == "cpu"
        np.testing.assert_allclose(got.probs, ref.probs, atol=1e-6)
        np.testing.assert_allclose(got.attention.cls, ref.attention.cls, atol=1e-6)


def test_out_of_memory_on_the_cpu_is_a_device_error(images):
    clf = load_classifier("demo-shapes", device="cpu")

    def full(module, args):
        raise torch.OutOfMemoryError("out of memory")

    clf.module.register_forward_pre_hook(full)
    with pytest.raises(DeviceError, match="out of memory on the CPU"):
        clf.classify(images[:1])


def test_command_line_says_so_once_and_goes_on(tmp_path, images, monkeypatch, capsys):
    from vit_desktop.cli import run_cli

    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"s{i}.png"))
        img.save(paths[-1])
    every_classifier_on_a_full_gpu(monkeypatch)
    assert (
        run_cli(["classify", *paths, "--model", "demo-shapes", "--format", "json", "--batch-size", "2"]) == 0
    )
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == paths and all(r["device"] == "cpu" for r in rows)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "ran out of memory; switched to the CPU" in lines[0], err
