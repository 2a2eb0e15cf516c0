"""Layering rules: the core never imports Qt; the UI never imports torch at module top."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vit_desktop"


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:  # module level only
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_qt():
    offenders = [
        p
        for p in (PKG / "core").rglob("*.py")
        if {"PySide6", "PyQt5", "PyQt6", "shiboken6"} & _all_imports(p)
    ]
    assert not offenders, offenders


def test_ui_never_imports_torch_at_module_top():
    ui = PKG / "ui"
    offenders = (
        [p for p in ui.rglob("*.py") if {"torch", "torchvision"} & _top_level_imports(p)]
        if ui.exists()
        else []
    )
    assert not offenders, offenders


def test_cli_and_launcher_do_not_import_torch_at_module_top():
    for name in ("cli.py", "app_launch.py", "logs.py", "__main__.py"):
        assert not {"torch", "torchvision", "PySide6"} & _top_level_imports(PKG / name), name


def test_importing_the_core_loads_no_qt():
    code = "import sys, vit_desktop.core.classifier, vit_desktop.core.catalog; print(any(m.startswith('PySide6') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_command_line_help_loads_no_torch():
    code = "import sys; from vit_desktop import cli; cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_package_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py")}
    assert found <= listed, found - listed
    assert "vit_desktop.resources" in listed
    assert cfg["tool"]["setuptools"]["package-dir"]["vit_desktop.resources"] == "resources"


def test_resources_come_from_the_installed_package():
    from importlib import resources

    res = resources.files("vit_desktop.resources")
    assert res.joinpath("demo_shapes.safetensors").is_file()
    assert res.joinpath("demo_shapes.labels.txt").read_text().split() == [
        "circle", "ellipse", "semicircle", "ring", "triangle", "square", "pentagon", "hexagon", "star", "cross",
    ]  # fmt: skip


def test_what_the_ui_draws_with_loads_no_torch():
    # The window renders maps and overlays from cached results on the GUI thread and must
    # appear before torch is imported: these core modules are numpy/Pillow only.
    mods = "maps, overlay, results, images, preprocess, errors"
    code = f"import sys; from vit_desktop.core import {mods}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
