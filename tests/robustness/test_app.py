"""Impatient people and bad files in the window, driven through its public API and real drop
events (offscreen, the real demo model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QCoreApplication
from torchvision.models.vision_transformer import VisionTransformer

from tests.helpers import assert_one_clear_line, drop_paths, every_classifier_on_a_full_gpu
from vit_desktop.core.demo.shapes import CLASSES, generate
from vit_desktop.ui.main_window import MainWindow

from . import bad_images

IDLE_MS = 120_000


def shapes(folder: Path, n: int, seed: int = 3, size=(160, 120)) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        s = generate(rng, label=i % len(CLASSES), size=size)
        path = folder / f"shape_{seed}_{i:03d}.png"
        s.image.save(path)
        truth[str(path)] = s.name
    return truth


def wait_idle(qtbot, win: MainWindow, timeout_ms: int = IDLE_MS) -> None:
    try:
        qtbot.waitUntil(win.idle, timeout=timeout_ms)
    except Exception:
        pending = [
            (k, i.detail_gen, i.detailed)
            for k, i in win.items.items()
            if i.result is None and i.error is None
        ]
        raise AssertionError(
            f"never idle: ready={win.model_ready} busy={win.status.jobs} model_gen={win.session.model_generation} "
            f"current={win.current!r} pending={pending[:5]} ({len(pending)})"
        ) from None


def tiny_checkpoint(folder: Path) -> tuple[str, tuple[str, ...]]:
    """A second model to switch to: a small torchvision ViT with its own labels."""
    torch.manual_seed(1)
    m = VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=48, num_classes=3
    )
    torch.nn.init.normal_(m.heads.head.weight, std=0.5)
    path = folder / "other-model.pth"
    torch.save(m.state_dict(), path)
    labels = ("apple", "banana", "cherry")
    (folder / "other-model.labels.txt").write_text("\n".join(labels))
    return str(path), labels


def test_bad_images_in_the_window(qtbot, make_window, tmp_path):
    """The bad-image table dropped as one folder among good pictures."""
    folder = tmp_path / "drop"
    cases = [c for c in bad_images.build_all(folder) if c.in_folder]
    truth = shapes(folder, 4)
    win = make_window()
    drop_paths(win, [str(folder)])
    wait_idle(qtbot, win)
    for c in cases:
        item = win.items[c.path]
        if c.error is None:
            assert item.error is None and item.result is not None, (c.id, item.error)
            assert item.result.geometry.original_size == c.size, c.id
        else:
            assert item.result is None and item.error, c.id
            assert_one_clear_line(item.error, c.path)
    for path, label in truth.items():
        assert win.items[path].result.top1.label == label


def test_non_utf8_names_in_the_window(qtbot, make_window, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    good = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    bad = os.path.join(os.fsencode(folder), b"bro\xefken.jpg")
    generate(np.random.default_rng(2), label=8, size=(160, 120)).image.save(good, format="PNG")
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    win = make_window()
    win.add_paths([str(folder)])
    wait_idle(qtbot, win)
    assert win.items[os.fsdecode(good)].result.top1.label == "star"
    assert "bro" in win.items[os.fsdecode(bad)].error


def test_hundreds_of_rapid_drops_while_the_model_loads(qtbot, make_window, tmp_path):
    folder = tmp_path / "drops"
    truth = shapes(folder, 12)
    bad = folder / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    huge = folder / "huge.png"
    huge.write_bytes(bad_images.declared_png(30_000, 30_000))
    files = [*truth, str(bad), str(huge)]
    win = make_window(wait=False)
    assert not win.model_ready
    slowest = 0.0
    dropped_before_ready = 0
    for i in range(300):
        batch = [files[(i + k) % len(files)] for k in range(1 + i % 3)]
        if i % 50 == 0:
            batch.append(str(folder))  # now and then the whole folder again
        t0 = time.perf_counter()
        drop_paths(win, batch)
        slowest = max(slowest, time.perf_counter() - t0)
        dropped_before_ready += not win.model_ready
        if i >= 200 and i % 10 == 0:
            qtbot.wait(5)  # later on, the event loop turns between bursts: the model arrives
    assert dropped_before_ready >= 200, dropped_before_ready
    assert slowest < 3.0, f"a drop blocked the window for {slowest:.2f} s"  # generous: no decoding
    wait_idle(qtbot, win)
    assert sorted(win.items) == sorted(files) and win.gallery.count() == len(files)
    for path, label in truth.items():
        assert win.items[path].result.top1.label == label, path
    assert "broken.jpg" in win.items[str(bad)].error
    assert "limit" in win.items[str(huge)].error


def test_switching_models_during_inference(qtbot, make_window, tmp_path):
    ckpt, other_labels = tiny_checkpoint(tmp_path)
    truth = shapes(tmp_path / "a", 24)
    win = make_window()
    win.add_paths([str(tmp_path / "a")])
    qtbot.waitUntil(lambda: any(i.result is not None for i in win.items.values()), timeout=IDLE_MS)
    assert not win.idle()  # still classifying: switch now
    win.load_model(ckpt)
    wait_idle(qtbot, win)
    assert win.model_id == ckpt
    for item in win.items.values():
        assert item.result.model_id == ckpt and item.result.top1.label in other_labels
    # Back and forth faster than anything can finish, in the middle of a run.
    more = shapes(tmp_path / "b", 12, seed=4)
    truth.update(more)
    win.add_paths([str(tmp_path / "b")])
    qtbot.wait(20)
    win.load_model("demo-shapes")
    win.load_model(ckpt)
    qtbot.wait(10)
    win.load_model("demo-shapes")
    wait_idle(qtbot, win)
    assert win.model_id == "demo-shapes"
    for path, label in truth.items():
        res = win.items[path].result
        assert res.model_id == "demo-shapes" and res.top1.label == label, (path, res.top1)


def test_code_running_checkpoint_in_the_window(qtbot, make_window, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model-from-a-stranger.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Touch(str(marker))}, path)
    win = make_window()
    shown: list[tuple[str, str]] = []
    win.errorShown.connect(lambda what, msg: shown.append((what, msg)))
    win.load_model(str(path))
    qtbot.waitUntil(lambda: any(what == "model" for what, _ in shown), timeout=60_000)
    (msg,) = [m for w, m in shown if w == "model"]
    assert_one_clear_line(msg, str(path))
    assert "refused" in msg and not marker.exists()
    # …and the app keeps working with the model it had.
    truth = shapes(tmp_path / "after", 2)
    win.add_paths(list(truth))
    wait_idle(qtbot, win)
    for p, label in truth.items():
        assert win.items[p].result.top1.label == label


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_close_during_inference_is_quick_and_clean(qtbot, make_window, tmp_path, qtlog):
    truth = shapes(tmp_path / "many", 60)
    win = make_window()
    win.add_paths([str(tmp_path / "many")])
    qtbot.waitUntil(lambda: any(i.result is not None for i in win.items.values()), timeout=IDLE_MS)
    assert not win.idle()
    win.close()
    assert win.worker.thread.isFinished()  # stopped within close's 2 s, not left running
    QCoreApplication.sendPostedEvents()  # late signals from the stopped worker must not land anywhere
    warnings = [
        r.message for r in qtlog.records if "thread" in r.message.lower() or "destroyed" in r.message.lower()
    ]
    assert warnings == []
    assert len(truth) == 60


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["VIT_DESKTOP_NO_DIALOGS"] = "1"
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from vit_desktop.ui.main_window import MainWindow
    from vit_desktop.ui.settings import Settings
    win = MainWindow(Settings(QSettings(sys.argv[1], QSettings.Format.IniFormat)), model="demo-shapes",
                     device="cpu")
    win.show()
    state = {"asked": False}

    def tick():
        if win.model_ready and not state["asked"]:
            state["asked"] = True
            win.add_paths(sys.argv[2:])
        if state["asked"] and any(i.result is not None for i in win.items.values()) and not win.idle():
            print(json.dumps({"closing_at": time.time()}), flush=True)
            win.close()
            app.quit()
            return
        QTimer.singleShot(5, tick)

    QTimer.singleShot(0, tick)
    app.exec()
    """
)


def test_closing_the_app_during_inference_exits_within_two_seconds(tmp_path):
    """A real process: the window closes mid-run and the process is gone ≤ 2 s later, with no
    Qt complaint about running threads."""
    truth = shapes(tmp_path / "many", 60)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "s.ini"), *truth],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    exited_at = time.time()
    line = out.strip().splitlines()[-1] if out.strip() else ""
    assert line, err
    closing_at = json.loads(line)["closing_at"]
    assert proc.returncode == 0, err
    assert exited_at - closing_at <= 2.0, f"{exited_at - closing_at:.2f} s from close to exit"
    assert "QThread" not in err and "Destroyed" not in err, err


def test_gpu_out_of_memory_in_the_window_falls_back_with_a_message(qtbot, make_window, tmp_path, monkeypatch):

    every_classifier_on_a_full_gpu(monkeypatch)
    win = make_window()
    messages: list[str] = []
    win.statusBar().messageChanged.connect(messages.append)
    truth = shapes(tmp_path / "oom", 3)
    win.add_paths(list(truth))
    wait_idle(qtbot, win)
    for path, label in truth.items():
        res = win.items[path].result
        assert res.device == "cpu" and res.top1.label == label
    assert any("ran out of memory" in m and "CPU" in m for m in messages), messages
    assert "CPU" in win.status.device.text()
