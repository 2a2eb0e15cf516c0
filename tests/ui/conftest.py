"""The window the window tests drive: offscreen, no dialogs, the shipped demo model loaded."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from vit_desktop.ui.main_window import MainWindow
from vit_desktop.ui.settings import Settings


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_DESKTOP_NO_DIALOGS", "1")
    settings = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    win = MainWindow(settings, model="demo-shapes", device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: bool(win.model_ready), timeout=60_000)
    yield win
    win.close()
