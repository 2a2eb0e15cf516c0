"""The app's identity on the desktop: its icon (from ``vit_desktop.resources/icons``) and
the id its ``.desktop`` file, AppStream metainfo and installed icons are named after."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from PySide6.QtGui import QIcon

#: Reverse-DNS application id: ``packaging/linux/APP_ID.desktop`` and ``APP_ID.metainfo.xml``.
APP_ID = "io.github.vitdesktop.ViTDesktop"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)


def icon_folder() -> Path:
    return Path(str(resources.files("vit_desktop.resources").joinpath("icons")))


def icon_file(size: int | None = None) -> Path:
    """``vit-desktop-SIZE.png`` for one of ``ICON_SIZES``; the SVG source when ``size`` is None."""
    if size is None:
        return icon_folder() / "vit-desktop.svg"
    if size not in ICON_SIZES:
        raise ValueError(f"no {size} px icon; sizes: {ICON_SIZES}")
    return icon_folder() / f"vit-desktop-{size}.png"


def app_icon() -> QIcon:
    """Every PNG size in one QIcon (Qt picks the nearest for title bars, task bars, docks)."""
    icon = QIcon()
    for size in ICON_SIZES:
        icon.addFile(str(icon_file(size)))
    return icon
