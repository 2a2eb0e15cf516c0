"""The Linux launcher (.desktop), the AppStream metainfo and `make install-desktop`.

desktop-file-validate and appstreamcli come from the desktop-file-utils and appstream
packages (.ci/run installs them).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import tomllib
from PIL import Image

from vit_desktop.core.images import IMAGE_EXTENSIONS, load_image
from vit_desktop.ui.app_icon import APP_ID, ICON_SIZES

ROOT = Path(__file__).resolve().parents[1]
LINUX = ROOT / "packaging" / "linux"
DESKTOP = LINUX / f"{APP_ID}.desktop"
METAINFO = LINUX / f"{APP_ID}.metainfo.xml"

# Every extension the app reads -> (MIME type, Pillow format to write a sample with).
# None: a format Pillow cannot decode without a plugin (HEIF), so the launcher must not claim it.
MIME_BY_EXTENSION = {
    ".jpg": ("image/jpeg", "JPEG"), ".jpeg": ("image/jpeg", "JPEG"), ".jpe": ("image/jpeg", "JPEG"),
    ".jfif": ("image/jpeg", "JPEG"), ".png": ("image/png", "PNG"), ".webp": ("image/webp", "WEBP"),
    ".gif": ("image/gif", "GIF"), ".bmp": ("image/bmp", "BMP"), ".dib": ("image/bmp", "BMP"),
    ".tif": ("image/tiff", "TIFF"), ".tiff": ("image/tiff", "TIFF"), ".avif": ("image/avif", "AVIF"),
    ".ppm": ("image/x-portable-pixmap", "PPM"), ".pgm": ("image/x-portable-graymap", "PPM"),
    ".pbm": ("image/x-portable-bitmap", "PPM"), ".pnm": ("image/x-portable-anymap", "PPM"),
    ".ico": ("image/vnd.microsoft.icon", "ICO"), ".tga": ("image/x-tga", "TGA"),
    ".jp2": ("image/jp2", "JPEG2000"), ".j2k": ("image/x-jp2-codestream", "JPEG2000"),
    ".heic": ("image/heic", None), ".heif": ("image/heif", None),
}  # fmt: skip


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed for this test (apt-get install desktop-file-utils appstream)"
    return path


def _desktop_entry(path: Path = DESKTOP) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # keys are case-sensitive
    cp.read(path, encoding="utf-8")
    return cp["Desktop Entry"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_desktop_file_passes_desktop_file_validate():
    r = subprocess.run([_tool("desktop-file-validate"), str(DESKTOP)], capture_output=True, text=True)
    assert r.returncode == 0 and "error" not in r.stdout, r.stdout + r.stderr


def test_desktop_file_launches_the_gui_entry_point_with_files():
    entry = _desktop_entry()
    assert entry["Exec"] == "vit-desktop-gui %F"
    assert "vit-desktop-gui" in _pyproject()["project"]["gui-scripts"]
    assert entry["Icon"] == APP_ID and entry["Terminal"] == "false"
    assert entry["Name"] == "ViT Desktop"


def test_desktop_mime_types_are_exactly_the_images_we_read(tmp_path):
    claimed = {m for m in _desktop_entry()["MimeType"].split(";") if m}
    assert set(MIME_BY_EXTENSION) == set(IMAGE_EXTENSIONS), (
        "the app reads other extensions now: add them (and their MIME types) here and to the .desktop file"
    )
    readable = set()
    rgb = Image.new("RGB", (40, 30), (200, 60, 30))
    for ext, (mime, fmt) in MIME_BY_EXTENSION.items():
        if fmt is None:
            continue
        path = tmp_path / f"sample{ext}"
        img = rgb.convert("1") if ext == ".pbm" else rgb.convert("L") if ext == ".pgm" else rgb
        img.save(path, fmt)
        loaded = load_image(str(path))  # the app's own decoder: raises if it cannot read it
        assert loaded.image.mode == "RGB" and min(loaded.original_size) >= 16, ext
        readable.add(mime)
    assert claimed == readable


def test_metainfo_passes_appstreamcli_validate():
    # --no-net: the screenshot URL is not served yet (see the comment in the file).
    r = subprocess.run([_tool("appstreamcli"), "validate", "--no-net", str(METAINFO)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_metainfo_names_the_launcher_screenshot_release_and_programs():
    root = ET.parse(METAINFO).getroot()
    cfg = _pyproject()
    assert root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID
    assert root.findtext("launchable") == DESKTOP.name
    assert root.find("releases/release").get("version") == cfg["project"]["version"]
    assert root.findtext("project_license") == cfg["project"]["license"]["text"]
    binaries = {b.text for b in root.findall("provides/binary")}
    assert binaries == set(cfg["project"]["scripts"]) | set(cfg["project"]["gui-scripts"])
    shot = root.find("screenshots/screenshot[@type='default']/image")
    assert shot.text.endswith("/docs/screenshot.png")
    with Image.open(ROOT / "docs" / "screenshot.png") as im:
        assert (int(shot.get("width")), int(shot.get("height"))) == im.size


def test_icons_exist_at_the_usual_sizes():
    icons = ROOT / "resources" / "icons"
    for size in ICON_SIZES:
        with Image.open(icons / f"vit-desktop-{size}.png") as im:
            assert im.size == (size, size) and im.mode == "RGBA"
            alpha = im.getchannel("A")
            assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((size // 2, size // 2)) == 255
    with Image.open(icons / "vit-desktop.ico") as ico:
        assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(ico.info["sizes"])
    with Image.open(icons / "vit-desktop.icns") as icns:
        assert icns.size == (1024, 1024)
    assert ET.parse(icons / "vit-desktop.svg").getroot().get("viewBox") == "0 0 256 256"


def _install(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(data)}
    return subprocess.run(["make", "-s", "-C", str(ROOT), "install-desktop", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_make_install_desktop_puts_launcher_metainfo_and_icons_in_the_user_data_folder(tmp_path):
    data = tmp_path / "share"
    gui = tmp_path / "bin" / "vit-desktop-gui"
    gui.parent.mkdir()
    gui.write_text("#!/bin/sh\n")
    gui.chmod(0o755)
    r = _install(data, f"DESKTOP_EXEC={gui}")
    assert r.returncode == 0, r.stdout + r.stderr
    installed = data / "applications" / DESKTOP.name
    entry = _desktop_entry(installed)
    assert entry["Exec"] == f"{gui} %F" and entry["TryExec"] == str(gui)
    assert entry["MimeType"] == _desktop_entry()["MimeType"]
    v = subprocess.run([_tool("desktop-file-validate"), str(installed)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout
    assert (data / "metainfo" / METAINFO.name).read_bytes() == METAINFO.read_bytes()
    for size in ICON_SIZES:
        png = data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        with Image.open(png) as im:
            assert im.size == (size, size)
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg").is_file()

    # Without DESKTOP_EXEC (and no .venv program named) the launcher runs it from PATH.
    r = _install(data, "DESKTOP_EXEC=")
    assert r.returncode == 0, r.stderr
    assert _desktop_entry(installed)["Exec"] == "vit-desktop-gui %F"

    r = subprocess.run([str(LINUX / "install-desktop.sh"), "--uninstall"], capture_output=True, text=True,
                       env={**os.environ, "XDG_DATA_HOME": str(data)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not installed.exists() and not (data / "metainfo" / METAINFO.name).exists()
    assert not list((data / "icons").rglob(f"{APP_ID}.*"))


def test_install_desktop_refuses_a_program_that_is_not_there(tmp_path):
    r = _install(tmp_path / "share", f"DESKTOP_EXEC={tmp_path / 'missing'}")
    assert r.returncode != 0 and "not an executable" in r.stderr
    assert not (tmp_path / "share" / "applications" / DESKTOP.name).exists()


def _program(folder: Path) -> Path:
    gui = folder / "vit-desktop-gui"
    gui.parent.mkdir(parents=True)
    gui.write_text("#!/bin/sh\n")
    gui.chmod(0o755)
    return gui


RESERVED = " \"'\\$`&|%;()#<>*?~"  # the .desktop format's reserved characters, and % (a field code)


@pytest.mark.parametrize("char", list(RESERVED), ids=[f"0x{ord(c):02x}" for c in RESERVED])
def test_install_desktop_refuses_a_program_path_the_launcher_cannot_hold(tmp_path, char):
    gui = _program(tmp_path / f"bin{char}x")
    data = tmp_path / "share"
    r = subprocess.run([str(LINUX / "install-desktop.sh"), str(gui)], capture_output=True, text=True,
                       env={**os.environ, "XDG_DATA_HOME": str(data)}, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "must not contain" in r.stderr, r.stdout + r.stderr
    assert not (data / "applications").exists()
    # Why: written as it is, the launcher would not pass desktop-file-validate. The others
    # pass it but do something else: a space or a backslash splits or changes the program's
    # path, % starts a field code.
    if char not in " \\%":
        bad = tmp_path / "bad.desktop"
        text = DESKTOP.read_text(encoding="utf-8").replace("Exec=vit-desktop-gui ", f"Exec={gui} ", 1)
        bad.write_text(text, encoding="utf-8")
        v = subprocess.run([_tool("desktop-file-validate"), str(bad)], capture_output=True, text=True)
        assert v.returncode != 0, v.stdout


def test_install_desktop_accepts_a_program_path_with_harmless_punctuation(tmp_path):
    gui = _program(tmp_path / "opt+tools,v1.2@home=x[1]!")
    data = tmp_path / "share"
    r = subprocess.run([str(LINUX / "install-desktop.sh"), str(gui)], capture_output=True, text=True,
                       env={**os.environ, "XDG_DATA_HOME": str(data)}, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    installed = data / "applications" / DESKTOP.name
    assert _desktop_entry(installed)["Exec"] == f"{gui} %F"
    v = subprocess.run([_tool("desktop-file-validate"), str(installed)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout
