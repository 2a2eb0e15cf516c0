"""File › New Classifier… in the window: a folder dropped on the dialog, teaching in the worker
(the same figures as core.teach.train), the confusion picture and the misclassified
thumbnails, Save As… (the window then runs the new classifier and lists it in Model ›
Recent), Cancel, the window closing while it teaches, and a folder that cannot be taught.
Offscreen, real Qt events, the real demo model.

``python -m tests.ui.test_teach_window docs/screenshot-teach.png`` draws the result view of
the README's screenshot."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.helpers import wait_result
from vit_desktop.core.demo.new_shapes import write_class_folders
from vit_desktop.ui import main_window
from vit_desktop.ui.jobs import JobKind
from vit_desktop.ui.teach_dialog import TeachDialog
from vit_desktop.ui.teach_result import cell_colour, matrix_layout

CLASSES = ("arrow", "crescent", "l-shape")  # with seed 2, a few l-shapes pass for arrows


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path, monkeypatch):
    """Features land in this test's own cache (the first run computes every one)."""
    monkeypatch.setenv("VIT_DESKTOP_FEATURE_CACHE", str(tmp_path / "features"))


def _examples(root, per_class: int = 8, classes=CLASSES, seed: int = 2) -> str:
    write_class_folders(root, classes=classes, per_class=per_class, seed=seed)
    return str(root)


def _click(widget) -> None:
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton, pos=widget.rect().center())


def _menu_action(win, text: str):
    for menu_action in win.menuBar().actions():
        for act in menu_action.menu().actions():
            if act.text().replace("&", "") == text:
                return act
    raise AssertionError(f"no menu item {text!r}")


def _open_dialog(win) -> TeachDialog:
    _menu_action(win, "New Classifier…").trigger()
    dialog = win.teach_dialog
    assert isinstance(dialog, TeachDialog) and dialog.isVisible()
    return dialog


def _drop_folder(widget, folder: str) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(folder)])
    at = widget.rect().center()
    enter = QDragEnterEvent(QPoint(at), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(widget, QDropEvent(QPointF(at), Qt.DropAction.CopyAction, mime,
                                              Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))  # fmt: skip


def _scanned(qtbot, dialog: TeachDialog):
    qtbot.waitUntil(lambda: dialog._scan is not None, timeout=30_000)
    return dialog._scan


def _recorder(signal) -> list:
    got: list = []
    signal.connect(lambda *args: got.append(args[0] if len(args) == 1 else args))
    return got


def _one_line(message: str, folder: str) -> None:
    assert message and "\n" not in message and len(message) <= 300 and "Traceback" not in message, message
    assert folder in message  # says which folder


class _Hold:
    """Holds the worker inside teaching, at its first report of features computed, until
    ``release()`` is true: what the test does meanwhile happens while it teaches.  Records
    every job update (on the worker's thread)."""

    def __init__(self, worker, release) -> None:
        self.updates: list = []
        self.held = threading.Event()
        self.release = release
        worker.jobUpdate.connect(self._on_update, Qt.ConnectionType.DirectConnection)

    def _on_update(self, u) -> None:
        self.updates.append(u)
        if u.kind is JobKind.TEACH and u.done > 0 and not u.finished and not self.held.is_set():
            self.held.set()
            end = time.monotonic() + 30
            while not self.release() and time.monotonic() < end:
                time.sleep(0.005)


def test_teach_in_the_window_save_and_run_the_new_classifier(qtbot, window, tmp_path):
    from vit_desktop.core.teach import saved
    from vit_desktop.core.teach.train import Settings, train

    folder = _examples(tmp_path / "examples")
    dialog = _open_dialog(window)
    _drop_folder(dialog, folder)
    assert dialog.folder.text() == folder
    scan = _scanned(qtbot, dialog)
    assert not scan.error and scan.counts == tuple((c, 8) for c in CLASSES)
    table = dialog.classes
    assert [(table.item(i, 0).text(), table.item(i, 1).text()) for i in range(table.rowCount())] == [
        (c, "8") for c in CLASSES
    ]
    assert dialog.backbone.currentData() == "demo-shapes"  # the window's model, by default
    assert dialog.mode.currentData() == "linear" and not dialog.augment.isChecked()

    outcomes = _recorder(dialog.outcomeShown)
    with qtbot.waitSignal(dialog.outcomeShown, timeout=60_000):
        _click(dialog.train_button)
    o = outcomes[-1]
    assert not o.error, o.error
    taught = train(Settings(folder, backbone="demo-shapes", seed=0))  # the core, the same settings
    assert o.classes == taught.classes == CLASSES
    assert o.accuracy == pytest.approx(taught.accuracy)
    assert [list(r) for r in o.confusion] == taught.confusion
    result = dialog.result
    assert f"{taught.accuracy:.1%}" in result.headline.text()
    assert taught.evaluation in result.scoring.text()
    per_class = [result.table.item(i, 3).text() for i in range(result.table.rowCount())]
    assert per_class == [f"{taught.per_class_accuracy[c]:.0%}" for c in CLASSES]

    # The confusion picture: its laid-out size, and each cell coloured by its count.
    lay = matrix_layout(CLASSES, result.font())
    dpr = result.picture.devicePixelRatio()
    assert (result.picture.width(), result.picture.height()) == (
        round(lay.size.width() * dpr), round(lay.size.height() * dpr))  # fmt: skip
    assert lay.size.width() >= lay.left + 3 * lay.cell and lay.cell >= 22
    for i in range(3):
        for j in range(3):
            centre = lay.cell_rect(i, j).topLeft() + QPoint(4, 4)  # inside the cell, off its number
            got = result.picture.pixelColor(round(centre.x() * dpr), round(centre.y() * dpr))
            want = cell_colour(taught.confusion[i][j], sum(taught.confusion[i]), i == j)
            assert got.rgb() == want.rgb(), (i, j)

    # The misclassified images as thumbnails; a click opens one in the window.
    assert result.thumbnail_count() == len(taught.misclassified) == o.wrong_total
    assert [w.path for w in o.misclassified] == [m.path for m in taught.misclassified]
    assert taught.misclassified  # the examples are chosen so (else the thumbnails go untested)
    view = result.thumbs
    at = view.visualItemRect(view.item(0)).center()
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at)
    wait_result(qtbot, window, taught.misclassified[0].path)

    # Save As…: the file and its report; the window then runs it, and Model › Recent lists it.
    out = tmp_path / "models" / "mine.safetensors"
    dialog.ask_save_path = lambda suggested: str(out)
    with qtbot.waitSignal(dialog.savedShown, timeout=60_000) as saving:
        _click(result.save_button)
    assert not saving.args[0].error
    assert out.is_file() and saved.report_path(out).is_file()
    assert json.loads(saved.report_path(out).read_text())["classes"] == list(CLASSES)
    qtbot.waitUntil(lambda: window.model_id == str(out) and window.model_ready, timeout=60_000)
    assert window.recent_models.paths()[0] == str(out)
    assert [a.data() for a in window.recent_models.menu.actions()][0] == str(out)
    probe = next(str(p) for p in sorted((tmp_path / "examples").rglob("*.png")) if str(p) not in window.items)
    window.add_paths([probe])
    item = wait_result(qtbot, window, probe)
    assert item.result is not None and item.result.model_id == str(out)
    labels = [p.label for p in item.result.top_k]
    assert set(labels) <= set(CLASSES) and len(labels) == len(CLASSES)

    # Train again with other settings, while the window runs the new classifier: the demo
    # backbone is loaded apart, and every feature comes from the cache.
    assert dialog.backbone.chosen() == "demo-shapes"
    dialog.mode.setCurrentIndex(dialog.mode.findData("multilayer"))
    with qtbot.waitSignal(dialog.outcomeShown, timeout=60_000) as again:
        _click(result.again_button)
    assert not again.args[0].error and again.args[0].mode == "multilayer" and again.args[0].extracted == 0
    assert result.outcome is again.args[0] and window.model_id == str(out)
    # A taught classifier is no backbone: said in one line.
    _open_dialog(window)
    dialog.backbone.setCurrentIndex(dialog.backbone.findData(str(out)))
    assert dialog.backbone.currentText().startswith("Current model")
    with qtbot.waitSignal(dialog.outcomeShown, timeout=60_000) as refused:
        dialog.train()
    assert "taught classifier" in refused.args[0].error and "\n" not in refused.args[0].error
    assert result.outcome is again.args[0]  # the last result stays


def test_cancel_while_teaching_saves_nothing_and_the_window_goes_on(qtbot, window, tmp_path):
    folder = _examples(tmp_path / "examples")
    dialog = _open_dialog(window)
    dialog.set_folder(folder)
    _scanned(qtbot, dialog)
    pressed = threading.Event()
    hold = _Hold(window.worker.worker, pressed.is_set)
    outcomes = _recorder(dialog.outcomeShown)
    _click(dialog.train_button)
    assert not dialog.train_button.isEnabled()
    qtbot.waitUntil(hold.held.is_set, timeout=30_000)
    assert window.status.cancel_button.isVisible() and window.status.running(JobKind.TEACH)
    _click(window.status.cancel_button)
    pressed.set()
    qtbot.waitUntil(lambda: bool(outcomes), timeout=30_000)
    assert outcomes[-1].cancelled and not window.status.running(JobKind.TEACH)
    assert dialog.message.text() == "Cancelled"
    assert window.worker.worker.teacher.taught is None
    assert not dialog.result.save_button.isEnabled() and dialog.train_button.isEnabled()
    assert not list(tmp_path.rglob("*.safetensors"))
    probe = str(tmp_path / "examples" / "arrow" / "arrow_0.png")
    window.add_paths([probe])
    assert wait_result(qtbot, window, probe).result is not None  # the window goes on


def test_closing_the_window_while_teaching_stops_it(qtbot, window, tmp_path):
    folder = _examples(tmp_path / "examples")
    dialog = _open_dialog(window)
    dialog.set_folder(folder)
    _scanned(qtbot, dialog)
    worker = window.worker.worker
    hold = _Hold(worker, worker.cancels.closing.is_set)  # teaching goes on once the window closes
    outcomes = _recorder(dialog.outcomeShown)
    _click(dialog.train_button)
    qtbot.waitUntil(hold.held.is_set, timeout=30_000)
    t0 = time.perf_counter()
    window.close()
    assert time.perf_counter() - t0 < 2.0
    assert window.worker.thread.isFinished() and window.worker not in main_window.STILL_RUNNING
    assert not dialog.isVisible()
    ends = [u for u in hold.updates if u.kind is JobKind.TEACH and u.finished]
    assert len(ends) == 1 and ends[0].cancelled
    assert not outcomes and worker.teacher.taught is None


def test_a_folder_with_one_class_says_so_in_one_line_and_teaches_nothing(qtbot, window, tmp_path):
    folder = _examples(tmp_path / "one", classes=("heart",), per_class=3)
    dialog = _open_dialog(window)
    hold = _Hold(window.worker.worker, lambda: True)
    dialog.folder.setText(folder)
    QTest.keyClick(dialog.folder, Qt.Key.Key_Return)
    scan = _scanned(qtbot, dialog)
    assert scan.error and "2 class" in scan.error
    _one_line(dialog.found.text(), folder)
    assert not dialog.train_button.isEnabled()
    with qtbot.waitSignal(dialog.outcomeShown, timeout=30_000) as got:
        dialog.train()  # asked anyway: the worker refuses it in one line too
    assert got.args[0].error and not got.args[0].cancelled
    _one_line(dialog.message.text(), folder)
    assert dialog.message.text() == got.args[0].error
    assert window.worker.worker.teacher.taught is None and dialog.result.outcome is None
    assert not hold.held.is_set()  # no feature was computed
    assert not list(tmp_path.rglob("*.safetensors")) and not (tmp_path / "features").exists()


# -- the README's screenshot -------------------------------------------------------------------
def render_screenshot(out: str, workdir: str) -> float:
    """Teach the demo model four new shapes (15 images each) in a real window and save the
    New Classifier dialog, its result view shown, as ``out``; returns the accuracy."""
    from PySide6.QtCore import QEventLoop, QSettings

    from vit_desktop.ui.main_window import MainWindow
    from vit_desktop.ui.settings import Settings
    from vit_desktop.ui.teach_dialog import open_teach_dialog

    app = QApplication.instance() or QApplication(["vit-desktop"])
    os.environ["VIT_DESKTOP_FEATURE_CACHE"] = os.path.join(workdir, "features")
    folder = _examples(
        os.path.join(workdir, "new-shapes"), per_class=15, classes="arrow,crescent,heart,l-shape", seed=1
    )
    win = MainWindow(Settings(QSettings(os.path.join(workdir, "s.ini"), QSettings.Format.IniFormat)),
                     model="demo-shapes", device="cpu")  # fmt: skip

    def wait(done, seconds: float = 120) -> None:
        end = time.monotonic() + seconds
        while not done():
            if time.monotonic() > end:
                raise TimeoutError("the window did not finish in time")
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)

    win.show()
    wait(lambda: win.model_ready)
    dialog = open_teach_dialog(win)
    dialog.set_folder(folder)
    wait(lambda: dialog._scan is not None)
    dialog.train()
    wait(lambda: dialog.result.outcome is not None and dialog._job is None)
    for _ in range(10):
        app.processEvents()
    dialog.grab().save(out)
    accuracy = dialog.result.outcome.accuracy
    win.close()
    return accuracy


if __name__ == "__main__":
    import shutil
    import tempfile

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["VIT_DESKTOP_NO_DIALOGS"] = "1"
    os.environ["VIT_DESKTOP_SINGLE_INSTANCE"] = "0"
    target = sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot-teach.png"
    work = os.path.join(tempfile.gettempdir(), "vit-desktop-teach")  # a fixed name: it shows in the picture
    shutil.rmtree(work, ignore_errors=True)
    print(f"{target}: accuracy {render_screenshot(target, work):.1%}")
    shutil.rmtree(work, ignore_errors=True)


def test_a_classifier_whose_backbone_weights_are_missing_offers_their_download(qtbot, window, tmp_path):
    """Taught on a catalog model served from 127.0.0.1; its weights removed; opening the file
    asks to download them (like any catalog model) and then runs it."""
    from tests.helpers import served_demo_backbone
    from vit_desktop.core import weights
    from vit_desktop.core.teach import saved
    from vit_desktop.core.teach.train import Settings, train

    with served_demo_backbone("test-shapes-window", "Shapes (served)", "test-shapes-0002.pth") as (
        srv,
        entry,
    ):
        taught = train(Settings(_examples(tmp_path / "d", per_class=4), backbone=entry.id))
        path, _ = saved.save(taught, tmp_path / "served.safetensors")
        weights.cached_path(entry).unlink()
        asked: list[str] = []
        window.ask = lambda title, text: asked.append(text) is None
        window.models.load(str(path))
        qtbot.waitUntil(lambda: window.models.model_id == str(path) and window.model_ready, timeout=60_000)
    assert len(asked) == 1 and "Shapes (served)" in asked[0] and "served.safetensors" in asked[0]
    assert srv.hits == 2 and weights.cached_path(entry).is_file()
