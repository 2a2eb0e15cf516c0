"""Test configuration: headless Qt, a private weights cache and log folder for every test."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# A test that starts the app must never hand its images to someone's running window.
os.environ["VIT_DESKTOP_SINGLE_INSTANCE"] = "0"

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("VIT_DESKTOP_LOG_DIR", str(tmp_path_factory.mktemp("logs")))
    monkeypatch.setenv("VIT_DESKTOP_FEATURE_CACHE", str(tmp_path_factory.mktemp("features")))
    monkeypatch.delenv("VIT_DESKTOP_WEIGHTS_URL", raising=False)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    """Windows on the real demo model (offscreen, no dialogs), closed after the test.

    ``make(model, ini, wait)``: windows made with the same ``ini`` share their settings."""
    from PySide6.QtCore import QSettings

    from vit_desktop.ui.main_window import MainWindow
    from vit_desktop.ui.settings import Settings

    monkeypatch.setenv("VIT_DESKTOP_NO_DIALOGS", "1")
    made = []

    def make(model: str | None = "demo-shapes", ini: str = "s.ini", wait: bool = True) -> MainWindow:
        settings = Settings(QSettings(str(tmp_path / ini), QSettings.Format.IniFormat))
        win = MainWindow(settings, model=model, device="cpu")
        qtbot.addWidget(win)
        win.show()
        made.append(win)
        if wait:
            qtbot.waitUntil(lambda: bool(win.model_ready), timeout=60_000)
        return win

    yield make
    for win in made:
        win.close()
