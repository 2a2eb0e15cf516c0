"""Help: the keyboard shortcuts (read from the window's own actions) and About."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMenuBar, QTableWidget, QTableWidgetItem, QVBoxLayout

# Keys handled by widgets rather than menu actions.
EXTRA_KEYS = (
    ("Left / Right, Up / Down (image or gallery)", "Previous / next image"),
    ("Mouse wheel", "Zoom around the pointer"),
    ("Drag with the left button", "Pan"),
    ("Hover a patch", "That patch's attention to every other patch"),
    ("Tab / Shift+Tab", "Move between the panels' controls"),
)


def shortcut_rows(menubar: QMenuBar) -> list[tuple[str, str]]:
    """(keys, what) for every menu action that has a shortcut, then the widget keys."""
    rows: list[tuple[str, str]] = []

    def walk(menu, path: str) -> None:
        for act in menu.actions():
            if act.menu() is not None:
                walk(act.menu(), f"{path} › {act.menu().title().replace('&', '')}")
                continue
            keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts()]
            keys = [k for k in keys if k]
            if keys:
                rows.append((", ".join(keys), f"{path} › {act.text().replace('&', '')}"))

    for act in menubar.actions():
        if act.menu() is not None:
            walk(act.menu(), act.menu().title().replace("&", ""))
    return rows + list(EXTRA_KEYS)


def show_shortcuts(parent, menubar: QMenuBar) -> QDialog:
    rows = shortcut_rows(menubar)
    dlg = QDialog(parent)
    dlg.setWindowTitle("Keyboard Shortcuts")
    table = QTableWidget(len(rows), 2, dlg)
    table.setHorizontalHeaderLabels(["Keys", "Action"])
    for i, (keys, what) in enumerate(rows):
        table.setItem(i, 0, QTableWidgetItem(keys))
        table.setItem(i, 1, QTableWidgetItem(what))
    table.resizeColumnsToContents()
    table.horizontalHeader().setStretchLastSection(True)
    table.verticalHeader().hide()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dlg)
    buttons.rejected.connect(dlg.reject)
    lay = QVBoxLayout(dlg)
    lay.addWidget(table)
    lay.addWidget(buttons)
    dlg.resize(620, 520)
    dlg.show()
    return dlg


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # a frozen build may carry no metadata
        module = sys.modules.get(dist)
        return getattr(module, "__version__", None) or "(version not recorded)"


def about_text(model: str | None, device: str | None) -> str:
    """Versions come from the installed packages' metadata: nothing heavy is imported."""
    import PySide6
    from PySide6.QtCore import qVersion

    from .. import __version__

    return "\n".join(
        [
            f"ViT Desktop {__version__}",
            "Classifies images with Vision Transformers and shows where the model looked.",
            "",
            f"torch {_version('torch')}",
            f"torchvision {_version('torchvision')}",
            f"Qt {qVersion()} (PySide6 {PySide6.__version__})",
            f"Python {sys.version.split()[0]} on {platform.system()} {platform.machine()}",
            f"Model: {model or 'none loaded'}",
            f"Device: {device or 'not chosen yet'}",
        ]
    )
