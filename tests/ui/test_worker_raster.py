"""A new result's overlay raster and per-head maps are drawn in the worker for the settings
the Attention panel shows, and put on screen as they are: the very pixels the window draws
itself.  Settings changed while the worker drew are drawn by the window (latest wins)."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from tests.helpers import shape_file
from vit_desktop.ui import render
from vit_desktop.ui.pixels import BAND, screen_copy


def _bytes(img: QImage) -> tuple:
    """Everything that shows of ``img``: its size, format and pixel rows."""
    img = img.convertToFormat(QImage.Format.Format_ARGB32)
    h, w = img.height(), img.width()
    rows = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    return w, h, rows[:, : 4 * w].tobytes()


def _heads_on_screen(win) -> list[tuple]:
    buttons = [b for b in win.attention._head_buttons if not b.isHidden()]
    return [_bytes(b.icon().pixmap(b.iconSize()).toImage()) for b in buttons]


def _drawn_by_the_window(qtbot, win, item) -> tuple:
    """The overlay, heads and widget pixels when the window draws ``item`` itself."""
    ov = win.overlay
    item.drawing = None
    ov._map_memo = ov._overlay_key = ov._heads_key = None
    ov.show(item, "")
    qtbot.wait(10)
    return ov.view._overlay, _heads_on_screen(win), _bytes(win.view.grab().toImage())


def _drop(qtbot, win, path) -> object:
    with qtbot.waitSignal(win.overlayDrawn, timeout=60_000):
        win.add_paths([str(path)])
    qtbot.wait(10)
    return win.items[str(path)]


def test_the_workers_raster_is_drawn_as_it_is_and_is_what_the_window_draws(qtbot, window, tmp_path):
    win, panel = window, window.attention
    panel.kind.setCurrentIndex(panel.kind.findData("fused"))
    panel.fusion.setCurrentIndex(panel.fusion.findData("max"))
    panel.cmap.setCurrentText("jet")
    panel.opacity.setValue(80)
    first, _ = shape_file(tmp_path, 8, seed=1)
    item = _drop(qtbot, win, first)
    d = item.drawing
    s = panel.settings()
    assert d is not None and d.map_key == (s.map_spec(), None) and d.overlay_key == ("jet", 0.8)
    assert s.layer == item.result.attention.num_layers - 1  # the slider at its end, as the worker drew
    # On screen: the worker's map and raster themselves, not recomputed.
    assert win.view._overlay is d.overlay and win.current_map() is d.grid
    heads, shot = _heads_on_screen(win), _bytes(win.view.grab().toImage())
    assert len(heads) == item.result.attention.num_heads
    assert heads == [_bytes(i) for i in d.heads]
    # The window drawing the same result itself: the same pixels, everywhere.
    overlay, own_heads, own_shot = _drawn_by_the_window(qtbot, win, item)
    assert overlay is not d.overlay
    assert _bytes(overlay) == _bytes(d.overlay)
    assert own_heads == heads and own_shot == shot
    # Another layer, head and map kind: the next result is drawn for them.
    panel.kind.setCurrentIndex(panel.kind.findData("cls"))
    panel.layer.setValue(1)
    panel.head.setCurrentIndex(2)
    second, _ = shape_file(tmp_path, 3, seed=2)
    item = _drop(qtbot, win, second)
    d = item.drawing
    assert d.map_key[0].layer == 1 and d.map_key[0].head == 2 and d.heads_key == (1, "jet", None)
    assert win.view._overlay is d.overlay
    heads, shot = _heads_on_screen(win), _bytes(win.view.grab().toImage())
    overlay, own_heads, own_shot = _drawn_by_the_window(qtbot, win, item)
    assert _bytes(overlay) == _bytes(d.overlay) and own_heads == heads and own_shot == shot


def test_settings_changed_while_the_worker_drew_are_drawn_by_the_window(qtbot, window, tmp_path):
    win, panel = window, window.attention
    emitted = threading.Event()
    win.worker.worker.resultReady.connect(lambda *_: emitted.set(), Qt.ConnectionType.DirectConnection)
    path, _ = shape_file(tmp_path, 5, seed=3)
    win.add_paths([str(path)])
    # The GUI thread runs no events until the worker has drawn and sent the result; then the
    # colours change before the result is taken in.
    assert emitted.wait(60)
    before = panel.settings().cmap
    panel.cmap.setCurrentText("gray")
    with qtbot.waitSignal(win.overlayDrawn, timeout=60_000):
        pass
    item = win.items[str(path)]
    d, s, ov = item.drawing, panel.settings(), win.overlay
    assert d.overlay_key[0] == before != "gray" and s.cmap == "gray"
    # The map did not depend on the colours: the worker's is used; the raster and heads are redrawn.
    assert win.current_map() is d.grid
    assert win.view._overlay is not d.overlay
    want = render.overlay_image(d.grid, item.result.geometry, "gray", s.opacity)
    assert _bytes(win.view._overlay) == _bytes(want) != _bytes(d.overlay)
    heads = _heads_on_screen(win)
    assert heads != [_bytes(i) for i in d.heads]
    layer = item.result.attention.num_layers - 1
    assert heads == [_bytes(i) for i in render.heads_grid(item.result.attention, layer, "gray")]
    assert ov._heads_key[2] == "gray"


def test_the_screen_copy_is_the_picture_in_the_painters_format_with_halved_levels(rng):
    arr = rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8)
    assert 600 % BAND  # copied in bands of rows, the last one shorter
    arr[:100, :, 0] = 255  # a red band: a channel order mistake shows
    img = Image.fromarray(arr, "RGB")
    copy = screen_copy(img)
    want = QImage(arr.data, 1000, 600, 3000, QImage.Format.Format_RGB888).convertToFormat(
        QImage.Format.Format_RGB32
    )
    assert copy.levels[0].format() == QImage.Format.Format_RGB32 and copy.levels[0] == want
    assert [(q.width(), q.height()) for q in copy.levels] == [(1000, 600), (500, 300), (250, 150)]
    for big, small in zip(copy.levels, copy.levels[1:]):
        b = np.frombuffer(_bytes(big)[2], np.uint8).reshape(big.height(), big.width(), 4).astype(np.int32)
        s = np.frombuffer(_bytes(small)[2], np.uint8).reshape(small.height(), small.width(), 4)
        mean = (b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4
        assert np.abs(s.astype(np.int32) - mean).max() <= 1
