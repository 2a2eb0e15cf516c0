"""Soak: the real window survives what a long session does to it — 50,000 hover moves across
patches and a 20,000-image folder run through the gallery — in its own process, so a crash
inside Qt (PySide6 6.12.0 on Python 3.11 aborted after a few thousand signals) fails this
test instead of ending the test run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vit_desktop.core.demo.shapes import generate

HOVERS = 50_000
FOLDER = 20_000


@pytest.mark.slow
def test_window_survives_50000_hovers_and_a_20000_image_folder(tmp_path):
    image = tmp_path / "star.png"
    generate(np.random.default_rng(0), label=8, size=(160, 120)).image.save(image)
    folder = tmp_path / "many"
    folder.mkdir()
    first = folder / "p00000.png"
    generate(np.random.default_rng(1), label=3, size=(48, 36)).image.save(first)
    for i in range(1, FOLDER):
        os.link(first, folder / f"p{i:05d}.png")  # hard links: 20,000 files in no time
    child = Path(__file__).with_name("soak_child.py")
    proc = subprocess.run([sys.executable, str(child), str(image), str(folder), str(HOVERS), str(tmp_path / "s.ini")],
                          capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert proc.returncode != -signal.SIGABRT, proc.stderr[-2000:]  # "Fatal Python error: bool_dealloc"
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["classified"] == report["gallery_rows"] == FOLDER + 1, report
    assert report["redraws"] >= HOVERS // 2, report  # most moves changed the patch and redrew
