"""Large photos in two stages: the result and its overlay from the draft decode at once, then
the sharp screen copy in its place without anything drawn over it moving."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QImage
from PySide6.QtTest import QTest

from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo.shapes import generate
from vit_desktop.core.sources import FileSource
from vit_desktop.ui.main_window import SHARPENING
from vit_desktop.ui.pixels import DISPLAY_MAX_SIDE
from vit_desktop.ui.session import Session

W, H = 6000, 4000


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    """A 24 MP JPEG of a demo star (drawn small, enlarged: quick to make) on a faint
    patchwork, so a picture drawn out of place shows."""
    rng = np.random.default_rng(9)
    small = np.asarray(generate(rng, label=8, size=(W // 10, H // 10)).image).astype(np.int16)
    patches = rng.integers(-24, 25, (H // 250, W // 250, 3)).repeat(25, axis=0).repeat(25, axis=1)
    img = Image.fromarray(np.clip(small + patches, 0, 255).astype(np.uint8), "RGB")
    path = tmp_path_factory.mktemp("two_stage") / "big.jpg"
    img.resize((W, H), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def _rgb(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    h, w = img.height(), img.width()
    rows = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    return rows[:, : 3 * w].reshape(h, w, 3).astype(np.int16)


def _grab(view) -> np.ndarray:
    return _rgb(view.grab().toImage())


def _inside(view, shrink: int = 3) -> tuple[slice, slice]:
    """The widget pixels the picture covers (a margin clear of its smoothed edges)."""
    z, off = view._transform()
    ow, oh = view._original
    x0, y0 = max(0, int(off.x()) + shrink), max(0, int(off.y()) + shrink)
    x1 = min(view.width(), int(off.x() + ow * z) - shrink)
    y1 = min(view.height(), int(off.y() + oh * z) - shrink)
    assert x1 - x0 > 50 and y1 - y0 > 50
    return slice(y0, y1), slice(x0, x1)


def _picture_matches(view, pic: np.ndarray, shot: np.ndarray) -> float:
    """Mean difference between the widget's pixels and the picture ``pic`` sampled at the
    original pixels they show (through the view's own mapping): small when it is drawn in place."""
    ys, xs = _inside(view, 6)
    ow, oh = view._original
    diffs = []
    for v in np.linspace(ys.start, ys.stop - 1, 12).astype(int):
        for u in np.linspace(xs.start, xs.stop - 1, 12).astype(int):
            x, y = view.to_original(QPointF(u + 0.5, v + 0.5))
            px = pic[
                min(pic.shape[0] - 1, int(y * pic.shape[0] / oh)),
                min(pic.shape[1] - 1, int(x * pic.shape[1] / ow)),
            ]
            diffs.append(np.abs(shot[v, u] - px).mean())
    return float(np.mean(diffs))


def _patches(qtbot, win, points) -> list:
    """The patch the view hovers with the mouse over each original pixel in ``points``."""
    view = win.view
    z, off = view._transform()
    out = []
    for x, y in points:
        view.leaveEvent(None)
        QTest.mouseMove(view, QPoint(round(off.x() + z * x), round(off.y() + z * y)))
        qtbot.waitUntil(lambda: view._hover is not None, timeout=5_000)
        out.append((view._hover, win.overlay.hover_token))
    view.leaveEvent(None)
    return out


def test_large_jpeg_first_from_the_draft_then_sharp_with_nothing_moving(qtbot, make_window, big_jpeg):
    win = make_window()
    gate, held = threading.Event(), []

    def hold(*_args) -> None:  # on the worker thread, after the first result: the sharp copy waits
        if not held:
            held.append(1)
            gate.wait(60)

    win.worker.worker.resultReady.connect(hold, Qt.ConnectionType.DirectConnection)
    try:
        with qtbot.waitSignal(win.overlayDrawn, timeout=60_000):
            win.add_paths([str(big_jpeg)])
        assert held and win.statusBar().currentMessage() == ""  # nothing said in the first second
        item = win.items[str(big_jpeg)]
        view = win.view
        # Stage one: the result of the draft decode, the very one the command line gives.
        cli = load_classifier("demo-shapes").classify([str(big_jpeg)], top_k=5, attention="full")[0]
        np.testing.assert_allclose(item.result.probs, cli.probs, atol=1e-6)
        assert item.result.top1.label == "star" and item.result.geometry.original_size == (W, H)
        assert item.display.draft and view.picture is item.display.levels[0]
        draft_w = view.picture.width()
        assert draft_w < DISPLAY_MAX_SIDE // 2
        view.set_show_grid(False)
        win.attention.cmap.setCurrentText("gray")
        win.attention.opacity.setValue(100)  # the overlay hides the picture wherever it is drawn
        qtbot.wait(20)
        fit_before, fit_transform = _grab(view), view._transform()
        points = [(700, 500), (W // 2, H // 2), (4321, 2345), (W - 300, H - 200)]
        patches = _patches(qtbot, win, points)
        assert len({p for p, _ in patches}) == len(points)
        # Zoomed in before the sharp copy is there: the draft, enlarged in place.
        view.zoom_by(3.0, QPointF(view.width() / 2, view.height() / 2))
        zoom_before, zoom_transform = _grab(view), view._transform()
        win.attention.opacity.setValue(0)
        shot = _grab(view)
        draft = _rgb(item.display.levels[0])
        assert _picture_matches(view, draft, shot) < 12
        assert _picture_matches(view, draft[::-1, ::-1], shot) > 24  # out of place, the check fails
        win.attention.opacity.setValue(100)
        qtbot.waitUntil(lambda: win.statusBar().currentMessage() == SHARPENING, timeout=10_000)
    finally:
        gate.set()
    # Stage two: the sharp copy takes the draft's place; the view, overlay and patches stay.
    qtbot.waitUntil(lambda: view.picture is not None and view.picture.width() > draft_w, timeout=60_000)
    assert win.statusBar().currentMessage() == ""
    assert not item.display.draft and item.sharp and view.picture is item.display.levels[0]
    assert max(view.picture.width(), view.picture.height()) == DISPLAY_MAX_SIDE
    assert view._transform() == zoom_transform
    zoom_after = _grab(view)
    ys, xs = _inside(view)
    np.testing.assert_array_equal(zoom_after[ys, xs], zoom_before[ys, xs])
    win.attention.opacity.setValue(0)
    assert _picture_matches(view, _rgb(item.display.levels[0]), _grab(view)) < 12
    win.attention.opacity.setValue(100)
    view.fit()
    assert view._transform() == fit_transform
    fit_after = _grab(view)
    ys, xs = _inside(view)
    np.testing.assert_array_equal(fit_after[ys, xs], fit_before[ys, xs])
    assert _patches(qtbot, win, points) == patches
    assert win.idle()
    # The same file again with another view of it: no new sharp decode is needed when the
    # result is rerun (a model switch keeps the sharp copy).
    sharp = item.display
    win.session.forget_details()
    with qtbot.waitSignal(win.overlayDrawn, timeout=60_000):
        win.request_detail(str(big_jpeg))
    assert item.display is sharp and view.picture is sharp.levels[0] and win.idle()


# -- the session's rules, headless ------------------------------------------------------------


def _session_with(key="a.jpg") -> Session:
    s = Session()
    s.model_ready = True
    s.add([(key, key, FileSource(key))])
    item = s.items[key]
    item.detailed, item.result = True, "its result"  # done: only a sharp copy may be awaited
    return s


def test_a_draft_asks_once_for_its_sharp_copy_and_never_replaces_one():
    s = _session_with()
    item = s.items["a.jpg"]
    draft, sharp, draft2 = object(), object(), object()
    s.take_display(item, draft, draft=True)
    seq = s.sharp_request("a.jpg")
    assert seq and s.sharp_request("a.jpg") is None and not s.idle()  # asked once, awaited
    assert s.sharp_arrived("a.jpg", seq + 1, sharp) is None and item.display is draft  # not this one
    assert s.sharp_arrived("a.jpg", seq, sharp) is item and item.display is sharp and s.idle()
    s.take_display(item, draft2, draft=True)  # a rerun (another model) brings a draft again
    assert item.display is sharp and s.sharp_request("a.jpg") is None


def test_a_skipped_sharp_copy_is_asked_again_and_a_readded_file_drops_a_late_one():
    s = _session_with()
    item = s.items["a.jpg"]
    s.take_display(item, "draft", draft=True)
    first = s.sharp_request("a.jpg")
    assert s.sharp_arrived("a.jpg", first, None) is None and item.display == "draft"  # skipped
    second = s.sharp_request("a.jpg")
    assert second and second > first
    s.add([("a.jpg", "a.jpg", FileSource("a.jpg"))])  # added again: the file may have changed
    assert s.sharp_arrived("a.jpg", second, "old sharp") is None and item.display == "draft"
    item.detailed = True
    s.take_display(item, "new sharp", draft=False)  # a small file: its copy is sharp at once
    assert item.sharp and s.sharp_request("a.jpg") is None
