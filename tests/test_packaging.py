"""The wheel carries the runtime assets inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_demo_weights_and_labels(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("vit_desktop-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("demo_shapes.safetensors", "demo_shapes.labels.txt"):
        assert f"vit_desktop/resources/{asset}" in names
    for icon in (
        "vit-desktop.svg",
        "vit-desktop-16.png",
        "vit-desktop-512.png",
        "vit-desktop.ico",
        "vit-desktop.icns",
    ):
        assert f"vit_desktop/resources/icons/{icon}" in names
    assert "vit_desktop/core/classifier.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert (
        "vit-desktop = vit_desktop.cli:main" in text and "vit-desktop-gui = vit_desktop.cli:gui_main" in text
    )
