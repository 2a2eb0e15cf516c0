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
    monkeypatch.delenv("VIT_DESKTOP_WEIGHTS_URL", raising=False)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
