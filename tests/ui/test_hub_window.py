"""Model › Open from Hugging Face…, driven offscreen against a Hub on 127.0.0.1: the dialog,
the download's progress and Cancel in the status bar, a refusal, and the model coming back
from the Hugging Face cache at the next start."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tests.helpers import fake_hub, hf_vit_files, worker_barrier

REPO = "org/tiny-vit"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """The files of a small Hugging Face ViT, and a private Hugging Face cache without a token."""
    from huggingface_hub import constants

    for name in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    folder = tmp_path / "repo"
    folder.mkdir()
    hf_vit_files(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _open_dialog(win):
    act = win.models.hub_action
    assert act in win.models.menus.model_menu.actions() and act.text() == "Open from &Hugging Face…"
    act.trigger()
    dialog = win.models.hub_dialog
    assert dialog is not None and dialog.isVisible()
    return dialog


def _type_and_open(qtbot, dialog, text: str) -> None:
    dialog.field.clear()
    qtbot.keyClicks(dialog.field, text)
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)


def test_open_from_hugging_face_loads_and_comes_back_at_the_next_start(qtbot, make_window, repo, monkeypatch):
    with fake_hub({REPO: repo}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        win = make_window("demo-shapes", ini="s.ini")
        worker_barrier(qtbot, win)  # the catalog filled the Model menu anew: the action is still there
        dialog = _open_dialog(win)
        _type_and_open(qtbot, dialog, "not a model name")
        assert dialog.isVisible() and "hf:ORG/NAME" in dialog.problem.text()  # said, nothing loaded
        shown = []
        win.worker.worker.jobUpdate.connect(
            lambda u: shown.append(u.text), Qt.ConnectionType.DirectConnection
        )
        _type_and_open(qtbot, dialog, f"https://huggingface.co/{REPO}")  # a pasted address works too
        assert not dialog.isVisible()
        qtbot.waitUntil(lambda: win.models.model_id == f"hf:{REPO}", timeout=60_000)
        assert win.status.model.text() == REPO
        assert any(t.startswith(f"Downloading hf:{REPO}") for t in shown), shown  # progress in the status bar
        assert any(p.startswith("/lfs/") for _, p in state.requests)
        assert win.settings.last_model == f"hf:{REPO}"
        win.close()
    # The next start, the server gone: the model comes back from the Hugging Face cache.
    again = make_window(None, ini="s.ini")
    assert again.models.model_id == f"hf:{REPO}" and again.status.model.text() == REPO


def test_a_refused_name_says_so_and_cancel_stops_a_download(qtbot, make_window, repo, monkeypatch, tmp_path):
    with fake_hub({REPO: repo}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        win = make_window("demo-shapes")
        errors = []
        win.errorShown.connect(lambda what, message: errors.append(message))
        _type_and_open(qtbot, _open_dialog(win), "org/nope")
        qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
        assert "no model org/nope" in errors[0] and "\n" not in errors[0]
        assert win.models.model_id == "demo-shapes" and win.model_ready  # the model that was there stays
        errors.clear()
        state.repos["org/big"] = {"config.json": repo["config.json"], "model.safetensors": bytes(16 << 20)}
        state.commits["org/big"] = "b" * 40
        state.pace = 0.02  # 64 KiB every 20 ms: 16 MiB take five seconds and more
        _type_and_open(qtbot, _open_dialog(win), "org/big")
        qtbot.waitUntil(lambda: any(p.startswith("/lfs/") for _, p in state.requests), timeout=30_000)
        qtbot.waitUntil(lambda: win.status.cancel_button.isVisible(), timeout=30_000)
        qtbot.mouseClick(win.status.cancel_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(errors), timeout=15_000)
        assert "cancelled" in errors[0] and not win.status.cancel_button.isVisible()
        assert win.models.model_id == "demo-shapes" and win.model_ready
        blobs = list((tmp_path / "hf" / "hub" / "models--org--big" / "blobs").iterdir())
        assert [b.name for b in blobs if b.stat().st_size > 1 << 20] == []  # no part of the weights kept
