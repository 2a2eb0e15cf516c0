"""The PyInstaller spec, checked without building (the build takes minutes and GBs:
``make package`` builds it and runs the frozen app's self-test).

The spec is executed as PyInstaller executes it, with recorders in place of PyInstaller's
build classes, so what it would hand to PyInstaller can be inspected.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "vit-desktop.spec"


class _Recorded:
    calls: list[_Recorded]

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs
        self.calls.append(self)
        # what the spec reads back from an Analysis
        self.scripts = ["<scripts>"]
        self.pure = ["<pure>"]
        self.binaries = ["<binaries>"]
        self.datas = ["<datas>"]


def _run_spec(tmp_path: Path, monkeypatch, platform: str) -> dict[str, list[_Recorded]]:
    calls: dict[str, list[_Recorded]] = {}
    names = {}
    for name in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE"):
        calls[name] = []
        names[name] = type(name, (_Recorded,), {"calls": calls[name]})
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.syspath_prepend(str(SPEC.parent))
    monkeypatch.delitem(sys.modules, "freeze", raising=False)
    ns = {"SPECPATH": str(SPEC.parent), "workpath": str(tmp_path / "work"), "__file__": str(SPEC), **names}
    exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), ns)
    monkeypatch.delitem(sys.modules, "freeze", raising=False)
    return calls


@pytest.fixture
def freeze(monkeypatch):
    monkeypatch.syspath_prepend(str(SPEC.parent))
    monkeypatch.delitem(sys.modules, "freeze", raising=False)
    mod = importlib.import_module("freeze")
    yield mod
    sys.modules.pop("freeze", None)


def test_analysis_includes_the_model_labels_icons_and_every_app_module(tmp_path, monkeypatch, freeze):
    calls = _run_spec(tmp_path, monkeypatch, "linux")
    (analysis,) = calls["Analysis"]
    datas = {(Path(src).relative_to(ROOT).as_posix(), dest) for src, dest in analysis.kwargs["datas"]}
    for name in ("demo_shapes.safetensors", "demo_shapes.labels.txt"):
        assert (f"resources/{name}", "vit_desktop/resources") in datas
    for icon in ("vit-desktop.svg", "vit-desktop-16.png", "vit-desktop-256.png", "vit-desktop-512.png"):
        assert (f"resources/icons/{icon}", "vit_desktop/resources/icons") in datas
    # The same files as the wheel's package data: one list, two packagings.
    assert {src for src, _ in datas} == {p.relative_to(ROOT).as_posix() for p in freeze.resource_files()}

    (entry,) = analysis.args[0]
    assert Path(entry).is_file() and "from vit_desktop.cli import main" in Path(entry).read_text()
    (staged,) = analysis.kwargs["pathex"]
    assert (Path(staged) / "vit_desktop" / "resources" / "__init__.py").is_file()
    assert (Path(staged) / "vit_desktop" / "cli.py").read_bytes() == (
        ROOT / "vit_desktop" / "cli.py"
    ).read_bytes()
    assert not list(Path(staged).rglob("__pycache__"))
    hidden = set(analysis.kwargs["hiddenimports"])
    for module in ("vit_desktop.selftest", "vit_desktop.ui.app", "vit_desktop.ui.single_instance",
                   "vit_desktop.core.classifier", "vit_desktop.resources", "PySide6.QtNetwork"):  # fmt: skip
        assert module in hidden
    binaries = {(Path(src).name, dest) for src, dest in analysis.kwargs["binaries"]}
    assert any(name.startswith("_C") and dest == "torchvision" for name, dest in binaries), binaries
    assert {"triton", "tkinter", "pytest"} <= set(analysis.kwargs["excludes"])


def test_one_folder_with_a_windowed_app_and_a_console_command(tmp_path, monkeypatch):
    calls = _run_spec(tmp_path, monkeypatch, "linux")
    exes = {e.kwargs["name"]: e for e in calls["EXE"]}
    assert set(exes) == {"vit-desktop-gui", "vit-desktop"}
    assert exes["vit-desktop-gui"].kwargs["console"] is False
    assert exes["vit-desktop"].kwargs["console"] is True
    for exe in exes.values():
        assert exe.kwargs["exclude_binaries"] is True  # one folder, not one file
        assert Path(exe.kwargs["icon"]).is_file()
    (coll,) = calls["COLLECT"]
    assert coll.kwargs["name"] == "vit-desktop"
    assert {id(a) for a in coll.args[:2]} == {id(e) for e in exes.values()}
    assert not calls["BUNDLE"]  # only on macOS


def test_windows_gets_the_ico_and_macos_an_app_bundle_with_the_icns(tmp_path, monkeypatch, freeze):
    win = _run_spec(tmp_path / "w", monkeypatch, "win32")
    assert {Path(e.kwargs["icon"]).suffix for e in win["EXE"]} == {".ico"}
    mac = _run_spec(tmp_path / "m", monkeypatch, "darwin")
    (bundle,) = mac["BUNDLE"]
    assert bundle.kwargs["name"] == "ViT Desktop.app"
    assert bundle.kwargs["bundle_identifier"] == freeze.APP_ID
    assert Path(bundle.kwargs["icon"]).suffix == ".icns" and Path(bundle.kwargs["icon"]).is_file()
    types = bundle.kwargs["info_plist"]["CFBundleDocumentTypes"][0]
    assert "public.jpeg" in types["LSItemContentTypes"] and types["CFBundleTypeRole"] == "Viewer"
    # the bundle's main program is the windowed one (listed first)
    (coll,) = mac["COLLECT"]
    assert coll.args[0].kwargs["name"] == "vit-desktop-gui"


def test_the_app_id_is_the_same_everywhere(freeze):
    from vit_desktop.ui.app_icon import APP_ID

    assert freeze.APP_ID == APP_ID
    assert (ROOT / "packaging" / "linux" / f"{APP_ID}.desktop").is_file()


def test_the_app_runs_without_the_modules_the_build_leaves_out(freeze):
    # What the frozen app lacks is made unimportable here; the app's modules and the
    # self-test's in-process checks (torch, torchvision, the demo model) must still work.
    code = (
        "import importlib, sys\n"
        f"for name in {freeze.EXCLUDES!r}:\n"
        "    sys.modules[name] = None\n"
        f"for name in {[m for m in freeze.hidden_imports(ROOT) if not m.endswith('__main__')]!r}:\n"
        "    importlib.import_module(name)\n"
        "from vit_desktop import selftest\n"
        "for check in (selftest.check_imports(), selftest.check_demo_model(), selftest.check_devices()):\n"
        "    print(check.status, check.name, check.detail)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("ok ") for line in lines), r.stdout


def test_frozen_entry_point_runs_the_command_line():
    entry = ROOT / "packaging" / "vit_desktop_main.py"
    r = subprocess.run([sys.executable, str(entry), "--version"], capture_output=True, text=True, timeout=60)
    from vit_desktop import __version__

    assert r.returncode == 0 and r.stdout.strip() == f"vit-desktop {__version__}", r.stdout + r.stderr


def test_build_script_builds_the_spec_and_runs_the_self_test():
    text = (ROOT / "packaging" / "build.sh").read_text()
    assert "packaging/vit-desktop.spec" in text and "--self-test" in text
    make = subprocess.run(["make", "-n", "-C", str(ROOT), "package"], capture_output=True, text=True)
    assert make.returncode == 0 and "packaging/build.sh" in make.stdout, make.stdout + make.stderr
