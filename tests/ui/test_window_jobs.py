"""Long work in the window: folder runs, downloads, web links, start-up model, settings."""

from __future__ import annotations

import http.server
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QSettings, Qt, QUrl
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest

from tests.helpers import DIGEST, QuietHandler, serving, worker_barrier
from tests.helpers import drop_mime as _drop
from tests.helpers import shape_file as _shape_file
from tests.helpers import wait_result as _wait_result
from tests.helpers import weights_entry as _entry
from vit_desktop.core import catalog, weights
from vit_desktop.core.demo.shapes import CLASSES, generate
from vit_desktop.ui.jobs import JobKind
from vit_desktop.ui.main_window import STILL_RUNNING
from vit_desktop.ui.settings import Settings


def _settings(path: Path) -> Settings:
    return Settings(QSettings(str(path), QSettings.Format.IniFormat))


def _folder(tmp_path: Path, n: int, size=(96, 80)) -> tuple[Path, dict[str, int]]:
    folder = tmp_path / "photos"
    folder.mkdir()
    labels = {}
    rng = np.random.default_rng(7)
    for i in range(n):
        s = generate(rng, label=i % len(CLASSES), size=size)
        p = folder / f"img{i:04d}.png"
        s.image.save(p)
        labels[str(p)] = s.label
    return folder, labels


def _classified(win) -> int:
    return sum(i.result is not None for i in win.items.values())


def test_folder_runs_in_the_background_with_progress_and_thumbnails(qtbot, make_window, tmp_path):
    win = make_window()
    folder, labels = _folder(tmp_path, 40)
    (folder / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff not really")  # last: in the background job
    seen_progress = []
    win.worker.worker.jobUpdate.connect(lambda u: seen_progress.append((u.kind.value, u.done, u.total)))
    with qtbot.waitSignal(win.jobDone, timeout=120_000) as done:
        win.add_paths([str(folder)])
        assert win.status.progress.isVisibleTo(win) and win.status.cancel_button.isVisibleTo(win)
    assert done.args == [False]
    assert _classified(win) == 40
    broken = win.items[str(folder / "zz-broken.jpg")]
    assert broken.result is None and broken.error and "\n" not in broken.error
    assert not win.status.progress.isVisibleTo(win) and not win.status.cancel_button.isVisibleTo(win)
    folder_steps = [p for p in seen_progress if p[0] == "folder"]
    assert folder_steps and folder_steps[-1][1] == folder_steps[-1][2] == 40  # the first one ran in full
    # Every image has a thumbnail and its top-1 in the gallery; the demo model gets them right.
    right = 0
    for key, label in labels.items():
        item = win.items[key]
        assert not win.gallery.row_item(item).icon().isNull()
        assert item.result.top1.label in win.gallery.row_item(item).text()
        right += item.result.top1.label == CLASSES[label]
    assert right >= 36
    # Walking the gallery shows each image in full (attention with the overlay drawn).
    win.gallery.setFocus()
    key = win.current
    with qtbot.waitSignal(win.overlayDrawn, timeout=60_000):
        QTest.keyClick(win.view, Qt.Key.Key_Right)
    assert win.current != key and win.items[win.current].detailed and win.current_map() is not None


def test_folder_cancel_keeps_results(qtbot, make_window, tmp_path):
    win = make_window()
    folder, _ = _folder(tmp_path, 300, size=(160, 120))
    win.add_paths([str(folder)])
    qtbot.waitUntil(lambda: _classified(win) >= 1, timeout=60_000)
    with qtbot.waitSignal(win.jobDone, timeout=60_000) as done:
        win.status.cancel_button.click()
    assert done.args == [True]
    kept = _classified(win)
    assert 1 <= kept < 300
    worker_barrier(qtbot, win)  # everything the worker sent has arrived
    assert _classified(win) == kept  # nothing more arrives after the cancel
    out = tmp_path / "so-far.csv"
    win.files.write_results(str(out))
    import csv

    with open(out, encoding="utf-8", newline="") as fh:
        paths = {row["path"] for row in csv.DictReader(fh)}
    assert paths == {i.key for i in win.items.values() if i.result is not None} and len(paths) == kept
    waiting = [i for i in win.items.values() if i.result is None and i.key != win.current]
    assert waiting and all("not classified" in win.gallery.row_item(i).text() for i in waiting)


def test_model_switch_during_a_folder_run_finishes_with_the_new_model(qtbot, make_window, tmp_path):
    win = make_window()
    folder, _ = _folder(tmp_path, 120)
    win.add_paths([str(folder)])
    qtbot.waitUntil(lambda: _classified(win) >= 1, timeout=60_000)
    old_gen = win.session.model_generation
    win.load_model("demo-shapes")  # the same model again: a new generation all the same
    qtbot.waitUntil(lambda: win.session.model_generation != old_gen and win.model_ready, timeout=60_000)
    qtbot.waitUntil(lambda: _classified(win) == 120 and not win.status.running(), timeout=120_000)
    assert win.worker.thread.isRunning()


def test_close_during_a_folder_run_is_quick(qtbot, make_window, tmp_path):
    win = make_window()
    folder, _ = _folder(tmp_path, 200, size=(320, 240))
    win.add_paths([str(folder)])
    qtbot.waitUntil(lambda: _classified(win) >= 1, timeout=60_000)
    win.close()
    assert win.worker.thread.isFinished()  # stopped within close's 2 s, not left running
    assert not STILL_RUNNING


# -- downloads in the window -------------------------------------------------------------------


@pytest.fixture
def server():
    with serving() as srv:
        yield srv


def _register(url: str) -> dict:
    entry = _entry(url, DIGEST)
    catalog.register(entry)
    return entry.to_dict(downloaded=False)


def test_close_during_download_leaves_no_partial(qtbot, make_window, server):
    port = server.server_address[1]
    entry = _register(f"http://127.0.0.1:{port}/stall/file.pth")
    try:
        win = make_window()
        asked = []
        win.ask = lambda title, text: asked.append(text) or True
        win.models.choose_model(entry)
        assert asked and "Test model" in asked[0]
        qtbot.waitUntil(lambda: win.status.running(JobKind.DOWNLOAD), timeout=30_000)
        assert list(weights.cache_dir().glob("*.partial"))  # it really is downloading
        win.close()
        assert win.worker.thread.isFinished() and not STILL_RUNNING  # the download stopped in time
        assert not list(weights.cache_dir().glob("*.partial"))
        assert not (weights.cache_dir() / "test-weights-0000.pth").exists()
    finally:
        catalog.unregister("test-model")


def test_download_asks_first_and_cancel_keeps_the_current_model(qtbot, make_window, server):
    port = server.server_address[1]
    entry = _register(f"http://127.0.0.1:{port}/stall/file.pth")
    try:
        win = make_window()
        win.ask = lambda title, text: False
        win.models.choose_model(entry)
        worker_barrier(qtbot, win)
        assert server.hits == 0 and win.model_id == "demo-shapes" and win.model_ready
        win.ask = lambda title, text: True
        win.models.choose_model(entry)
        qtbot.waitUntil(lambda: win.status.running(JobKind.DOWNLOAD), timeout=30_000)
        assert "Downloading Test model" in win.status.job.text()
        with qtbot.waitSignal(win.errorShown, timeout=10_000) as err:
            win.status.cancel_button.click()
        assert err.args[0] == "model" and "cancel" in err.args[1].lower()
        assert (
            win.model_id == "demo-shapes" and win.model_ready and win.status.model.text().startswith("Demo")
        )
        assert not win.status.cancel_button.isVisibleTo(win)
        assert not list(weights.cache_dir().glob("*.partial"))
        path, _ = _shape_file(Path(weights.cache_dir()).parent, 2)
        win.add_paths([str(path)])
        assert _wait_result(qtbot, win, str(path)).result is not None  # the demo model still works
    finally:
        catalog.unregister("test-model")


# -- web links ---------------------------------------------------------------------------------------


class _ImageHandler(QuietHandler):
    def do_GET(self):  # noqa: N802
        self.server.hits += 1
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_web_link_drop_asks_first_then_fetches_in_the_worker(qtbot, make_window, tmp_path):
    s = generate(np.random.default_rng(3), label=5, size=(200, 150))
    buf = io.BytesIO()
    s.image.save(buf, format="PNG")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    srv.body, srv.hits = buf.getvalue(), 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        win = make_window()
        url = f"http://127.0.0.1:{srv.server_address[1]}/pics/star.png"
        md = QMimeData()
        md.setUrls([QUrl(url)])
        win.ask = lambda title, text: False
        _drop(win, md)
        assert win.statusBar().currentMessage() == "Nothing was fetched"
        worker_barrier(qtbot, win)
        assert srv.hits == 0 and url not in win.items  # never fetched silently
        questions = []
        win.ask = lambda title, text: questions.append(text) or True
        _drop(win, md)
        assert questions and "50 MB" in questions[0] and "20 s" in questions[0]
        item = _wait_result(qtbot, win, url)
        assert srv.hits == 1 and item.result is not None
        assert item.result.top1.label == CLASSES[5] and item.result.geometry.original_size == (200, 150)
        qtbot.waitUntil(lambda: win.current_map() is not None, timeout=30_000)
        png = tmp_path / "web-overlay.png"
        with qtbot.waitSignal(win.overlayExported, timeout=30_000) as sig:
            win.files.request_overlay(str(png))
        assert sig.args == [str(png), ""]
        with Image.open(png) as shot:
            assert shot.size == (200, 150)
        win.load_model("demo-shapes")  # a new model runs it again without fetching again
        qtbot.waitUntil(lambda: win.model_ready and win.items[url].detailed, timeout=60_000)
        assert srv.hits == 1
    finally:
        srv.shutdown()
        srv.server_close()


def test_drag_over_highlights_and_says_what_will_happen(make_window, tmp_path):
    from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent
    from PySide6.QtWidgets import QApplication

    win = make_window()
    folder, _ = _folder(tmp_path, 2)
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(folder)), QUrl.fromLocalFile(str(next(folder.iterdir())))])
    enter = QDragEnterEvent(QPoint(50, 50), Qt.DropAction.CopyAction, md, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(win, enter)
    assert enter.isAccepted()
    assert win.view.drop_hint == (True, "Drop to classify 1 file and 1 folder (walked)")
    before = win.view.grab().toImage()
    QApplication.sendEvent(win, QDragLeaveEvent())
    assert win.view.drop_hint is None
    assert win.view.grab().toImage() != before  # the highlight was drawn, and is gone
    bad = QMimeData()
    bad.setText("just some words")
    enter = QDragEnterEvent(QPoint(50, 50), Qt.DropAction.CopyAction, bad, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(win, enter)
    assert not enter.isAccepted()
    ok, why = win.view.drop_hint
    assert not ok and "only image files" in why and why in win.statusBar().currentMessage()


def test_paste_image_data_and_a_path(qtbot, make_window, tmp_path):
    win = make_window()
    s = generate(np.random.default_rng(11), label=1, size=(150, 120))
    from vit_desktop.ui.render import rgb_to_qimage

    QGuiApplication.clipboard().setImage(rgb_to_qimage(np.asarray(s.image)))
    win.intake.paste()
    key = next(k for k in win.items if k.startswith("pasted:"))
    assert _wait_result(qtbot, win, key).result.top1.label == CLASSES[1]
    path, s2 = _shape_file(tmp_path, 7)
    QGuiApplication.clipboard().setText(str(path))
    win.intake.paste()
    assert _wait_result(qtbot, win, str(path)).result.top1.label == CLASSES[s2.label]


# -- start-up model, offer bar, settings --------------------------------------------------------------


def test_default_model_is_the_demo_with_a_dismissable_offer(qtbot, make_window):
    win = make_window(model=None)
    assert win.model_id == "demo-shapes"  # ViT-B/16's weights are not in this test's cache
    qtbot.waitUntil(lambda: win.offer_bar.isVisibleTo(win), timeout=30_000)
    size = catalog.get("vit-b-16").file_size_mb
    assert f"{size:.0f} MB" in win.offer_bar.label.text() and "ViT-B/16" in win.offer_bar.label.text()
    win.offer_bar.close_button.click()
    assert not win.offer_bar.isVisibleTo(win) and win.settings.offer_dismissed
    win.close()
    again = make_window(model=None)
    qtbot.waitUntil(lambda: bool(again.models.catalog), timeout=30_000)  # the offer would come with it
    assert again.model_id == "demo-shapes" and not again.offer_bar.isVisibleTo(again)


def test_last_model_missing_falls_back_to_the_demo_without_downloading(qtbot, make_window, tmp_path, server):
    port = server.server_address[1]
    _register(f"http://127.0.0.1:{port}/ok/file.pth")
    try:
        s = _settings(tmp_path / "s.ini")
        s.last_model = "test-model"
        s.sync()
        win = make_window(model=None, wait=False)
        qtbot.waitUntil(lambda: win.model_id == "demo-shapes", timeout=60_000)
        assert server.hits == 0
        assert "Test model" in win.statusBar().currentMessage() and "demo" in win.statusBar().currentMessage()
    finally:
        catalog.unregister("test-model")


def test_settings_persist_between_runs(qtbot, make_window, tmp_path):
    win = make_window()
    win.attention.cmap.setCurrentIndex(win.attention.cmap.findData("viridis"))
    win.attention.opacity.setValue(30)
    win.attention.kind.setCurrentIndex(win.attention.kind.findData("cls"))
    path, _ = _shape_file(tmp_path, 3)
    win.add_paths([str(path)])
    _wait_result(qtbot, win, str(path))
    win.set_grid(False)
    win.docks["Gallery"].hide()
    win.resize(800, 530)  # the offscreen screen is 800×600: restoring clamps to it
    qtbot.wait(50)
    win.close()
    again = make_window(model=None)
    s = again.attention.settings()
    assert (s.cmap, round(s.opacity, 2), s.kind) == ("viridis", 0.30, "cls")
    assert not again.view.show_grid
    assert not again.docks["Gallery"].isVisibleTo(again)
    assert (again.width(), again.height()) == (800, 530)
    assert again.settings.recent_files[0] == str(path)
    assert again.recent_menu.actions()[0].text() == str(path)
    assert again.model_id == "demo-shapes"


# -- menus, keyboard, size -----------------------------------------------------------------------------


def test_device_menu_disables_what_is_not_here_with_the_reason(qtbot, make_window):
    from vit_desktop.core.devices import device_status

    win = make_window()
    qtbot.waitUntil(lambda: any(a.text().startswith("CPU") for a in win.models.menus.device_menu.actions()),
                    timeout=30_000)  # fmt: skip
    acts = {a.text().split()[0].lower(): a for a in win.models.menus.device_menu.actions()
            if not a.isSeparator() and a is not win.models.fast_action}  # fmt: skip
    assert acts["auto"].isEnabled()
    for dev in device_status():
        act = acts[dev.name]
        assert act.isEnabled() == dev.available
        assert dev.reason in act.text()
    assert acts["cpu"].isChecked()


def test_help_lists_shortcuts_and_about_names_versions(make_window):
    from importlib import metadata

    from vit_desktop.ui.help import about_text, shortcut_rows

    win = make_window()
    rows = dict((what, keys) for keys, what in shortcut_rows(win.menuBar()))
    assert rows["File › Open…"] == "Ctrl+O"
    assert "Ctrl+=" in rows["View › Zoom In"] and rows["View › Fit"] == "Ctrl+0"
    text = about_text(win.models.model_name, win.status.device.text())
    assert (
        f"torch {metadata.version('torch')}" in text
        and f"torchvision {metadata.version('torchvision')}" in text
    )
    assert "Qt 6." in text and "Device: CPU" in text and "Demo" in text


def test_keyboard_reaches_every_menu_and_control(make_window):
    win = make_window()
    for act in win.menuBar().actions():
        assert "&" in act.text(), act.text()  # Alt+letter opens it
    for w in (win.view, win.gallery, win.predictions.k, win.attention.kind, win.attention.layer,
              win.attention.head, win.attention.opacity, win.attention.cmap):  # fmt: skip
        assert w.focusPolicy() & Qt.FocusPolicy.TabFocus, w
    from PySide6.QtWidgets import QApplication
    from shiboken6 import getCppPointer

    win.activateWindow()
    win.view.setFocus()
    seen = set()
    for _ in range(40):  # Tab goes round the controls
        QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        seen.add(getCppPointer(QApplication.focusWidget())[0])
    for w in (win.view, win.gallery, win.attention.kind, win.attention.opacity, win.attention.cmap,
              win.predictions.k):  # fmt: skip
        assert getCppPointer(w)[0] in seen, w


def test_usable_at_1024x640(qtbot, make_window, tmp_path):
    win = make_window()
    win.resize(1024, 640)
    path, _ = _shape_file(tmp_path, 6)
    with qtbot.waitSignal(win.overlayDrawn, timeout=60_000):
        win.add_paths([str(path)])
    assert (win.width(), win.height()) == (1024, 640)
    assert win.view.width() >= 400 and win.view.height() >= 250
    for dock in win.docks.values():
        assert dock.isVisibleTo(win) and dock.width() > 100 and dock.height() > 60
    assert win.attention.layer.isVisibleTo(win) and win.predictions.k.isVisibleTo(win)
    out = tmp_path / "small.png"
    assert win.grab().save(str(out))


def test_window_is_shown_before_torch_is_imported(tmp_path):
    trace = tmp_path / "trace.txt"
    path, _ = _shape_file(tmp_path, 4)
    env = dict(os.environ, VIT_DESKTOP_TRACE=str(trace), QT_QPA_PLATFORM="offscreen")
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, "-m", "vit_desktop", "--screenshot", str(out), "--model", "demo-shapes",
                           str(path)], capture_output=True, text=True, timeout=180, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = {}
    for line in trace.read_text().splitlines():
        name, t, *rest = line.split()
        events[name] = (float(t), rest)
    assert events["window_shown"][1] == ["torch_imported=False"]
    assert events["window_shown"][0] <= events["model_ready"][0] <= events["first_prediction_drawn"][0]
    with Image.open(out) as shot:
        assert shot.size[0] >= 800


def test_fast_mode_toggle_recomputes_and_persists(qtbot, make_window, tmp_path):
    import torch

    from vit_desktop.core.devices import fast_dtype

    win = make_window()
    path, s = _shape_file(tmp_path, 8)
    win.add_paths([str(path)])
    before = _wait_result(qtbot, win, str(path)).result
    dtype, why = fast_dtype(torch.device("cpu"))
    with qtbot.waitSignal(win.fastChanged, timeout=30_000) as state:  # the window has applied it
        win.models.fast_action.trigger()
    assert win.settings.fast
    if dtype is None:  # this CPU has no fast path: the menu says why and stays off
        assert state.args == [False, why] and not win.models.fast_action.isChecked()
        return
    assert (
        state.args == [True, ""] and win.models.fast_action.isChecked() and "fast" in win.status.device.text()
    )
    qtbot.waitUntil(lambda: win.items[str(path)].detailed and win.items[str(path)].result is not before,
                    timeout=60_000)  # fmt: skip
    after = win.items[str(path)].result
    assert after.top1.label == before.top1.label
    assert not np.array_equal(after.probs, before.probs)  # really recomputed in lower precision
    win.close()
    again = make_window()
    qtbot.waitUntil(lambda: "fast" in again.status.device.text(), timeout=30_000)
    assert again.models.fast_action.isChecked()


def test_checkpoint_with_a_chosen_labels_file(qtbot, make_window, tmp_path):
    import torch

    from tests.helpers import small_torchvision_vit as _tv

    torch.save(_tv(hidden_dim=192, num_heads=3, num_classes=3).state_dict(), tmp_path / "net.pth")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    win = make_window()
    with qtbot.waitSignal(win.modelReady, timeout=60_000):
        win.load_model(str(tmp_path / "net.pth"), labels=str(names))
    path, _ = _shape_file(tmp_path, 2)
    win.add_paths([str(path)])
    res = _wait_result(qtbot, win, str(path)).result
    assert {p.label for p in res.top_k} == {"cat", "dog", "bird"}
    assert win.status.model.text() == "net" and win.model_id == str(tmp_path / "net.pth")


def test_memory_stays_bounded_images_shown_long_ago_are_rerun(qtbot, make_window, tmp_path):
    from vit_desktop.ui.session import KEEP_DETAILED

    win = make_window()
    folder, _ = _folder(tmp_path, KEEP_DETAILED + 4)
    with qtbot.waitSignal(win.jobDone, timeout=60_000):
        win.add_paths([str(folder)])
    keys = list(win.items)
    for key in keys:  # show every one in full
        win.gallery.select(win.items[key])
        qtbot.waitUntil(lambda k=key: win.items[k].detailed, timeout=30_000)
    full = [k for k in keys if win.items[k].detailed]
    assert len(full) == KEEP_DETAILED and full == keys[-KEEP_DETAILED:]
    first = win.items[keys[0]]
    assert first.display is None and first.result.attention.q is None  # light, but still listed
    assert first.result.top1.label in win.gallery.row_item(first).text()
    with qtbot.waitSignal(win.overlayDrawn, timeout=30_000):
        win.gallery.select(first)  # shown again: run again in full
    assert first.detailed and first.display is not None and win.current_map() is not None


def test_close_right_after_start_never_aborts(tmp_path):
    """Closed while the worker is still importing PyTorch and loading: the process ends
    normally, never with "QThread: Destroyed while thread is still running"."""
    script = f"""
import os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from vit_desktop.ui.main_window import MainWindow
from vit_desktop.ui.settings import Settings
win = MainWindow(Settings(QSettings({str(tmp_path / "s.ini")!r}, QSettings.Format.IniFormat)), model="demo-shapes")
win.show()
t = time.time()
while time.time() - t < 0.05:
    app.processEvents()
t0 = time.time()
win.close()
print("closed in %.2f s" % (time.time() - t0))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Destroyed while thread" not in proc.stderr
    assert float(proc.stdout.split()[2]) < 2.5


def test_nothing_is_left_waiting_rapid_adds_readds_and_a_failed_switch(qtbot, make_window, tmp_path):
    win = make_window()
    big, _ = _shape_file(tmp_path, 0, size=(3000, 2000))
    a, _ = _shape_file(tmp_path, 1)
    b, _ = _shape_file(tmp_path, 2)
    for p in (big, a, b):  # each becomes current before the previous one ran: latest wins
        win.add_paths([str(p)])
    qtbot.waitUntil(win.idle, timeout=60_000)
    assert all(i.result is not None for i in win.items.values())
    win.gallery.select(win.items[str(a)])
    qtbot.waitUntil(lambda: win.items[str(a)].detailed, timeout=30_000)
    win.add_paths([str(b), str(a)])  # added again, one of them already shown in full
    qtbot.waitUntil(win.idle, timeout=60_000)
    assert all(i.result is not None for i in win.items.values())
    folder, _ = _folder(tmp_path, 150)
    win.add_paths([str(folder)])
    qtbot.waitUntil(lambda: _classified(win) >= 5, timeout=60_000)
    with qtbot.waitSignal(win.errorShown, timeout=30_000):
        win.load_model("no-such-model")  # fails: the demo model stays and finishes the folder
    qtbot.waitUntil(win.idle, timeout=120_000)
    assert _classified(win) == len(win.items) and win.model_id == "demo-shapes"


def test_large_jpeg_is_shown_through_a_reduced_decode_with_full_size_geometry(qtbot, make_window, tmp_path):
    win = make_window()
    s = generate(np.random.default_rng(9), label=8, size=(6000, 4000))
    path = tmp_path / "big.jpg"
    s.image.save(path, quality=90)
    with qtbot.waitSignal(win.sharpShown, timeout=60_000):  # after the draft's result, the sharp copy
        win.add_paths([str(path)])
    item = win.items[str(path)]
    assert item.result.geometry.original_size == (6000, 4000)
    assert item.result.top1.label == "star"
    assert max(item.display.width(), item.display.height()) == 2560  # the screen copy, not 6000
    x, y = item.result.attention_peak
    left, top, right, bottom = s.bbox
    assert left - 500 <= x <= right + 500 and top - 500 <= y <= bottom + 500


def test_cancel_pressed_while_the_worker_is_busy_cancels_the_folder_run(qtbot, make_window, tmp_path):
    """The person presses Cancel as soon as "Classifying…" shows, before the worker (busy with
    something else) has started the run: the run is cancelled all the same."""
    from PySide6.QtCore import QObject, Signal, Slot

    win = make_window()

    class Busy(QObject):
        go = Signal()

        @Slot()
        def block(self) -> None:
            time.sleep(1.5)

    busy = Busy()
    busy.moveToThread(win.worker.thread)
    busy.go.connect(busy.block)
    folder, _ = _folder(tmp_path, 60, size=(160, 120))
    busy.go.emit()  # the worker thread is busy for 1.5 s from now
    with qtbot.waitSignal(win.jobDone, timeout=60_000) as done:
        win.add_paths([str(folder)])
        qtbot.waitUntil(lambda: win.status.running(JobKind.FOLDER), timeout=30_000)
        win.status.cancel_button.click()
    assert done.args == [True]
    worker_barrier(qtbot, win)
    assert _classified(win) <= 1  # at most the image on screen, asked for on its own
