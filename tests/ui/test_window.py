"""The window, driven offscreen with real Qt events and the real demo model."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QUrl
from PySide6.QtGui import QImage

from tests.helpers import drop_mime as _drop
from tests.helpers import shape_file as _shape_file
from tests.helpers import wait_result as _wait_result
from tests.helpers import worker_barrier
from vit_desktop.core.demo.shapes import generate
from vit_desktop.ui.main_window import STILL_RUNNING


def test_drop_files_classifies_and_draws(qtbot, window, tmp_path):
    path, s = _shape_file(tmp_path, 8)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    _drop(window, mime)
    item = _wait_result(qtbot, window, str(path))
    assert item.result is not None and item.result.top1.label == "star"
    assert window.predictions.labels()[0][0] == "star"
    assert window.view._overlay is not None
    assert "star" in window.gallery.row_item(item).text()


def test_drop_folder_and_raw_image_data(qtbot, window, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    p1, _ = _shape_file(folder, 5, seed=1)
    p2, _ = _shape_file(folder, 3, seed=2)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    _drop(window, mime)
    for p in (p1, p2):
        assert _wait_result(qtbot, window, str(p)).result is not None
    s = generate(np.random.default_rng(5), label=9, size=(300, 300))
    arr = np.ascontiguousarray(np.asarray(s.image))
    qimg = QImage(arr.data, 300, 300, 900, QImage.Format.Format_RGB888).copy()
    mime = QMimeData()
    mime.setImageData(qimg)
    _drop(window, mime)
    key = next(k for k in window.items if k.startswith("pasted:"))
    assert _wait_result(qtbot, window, key).result.top1.label == "cross"


def test_sliders_rerender_without_running_the_model(qtbot, window, tmp_path):
    path, _ = _shape_file(tmp_path, 0)
    window.add_paths([str(path)])
    _wait_result(qtbot, window, str(path))
    qtbot.waitUntil(lambda: window.current_map() is not None, timeout=30_000)
    clf = window.worker.worker.clf
    calls = []  # every forward pass of the model, however it is reached
    hook = clf.module.register_forward_pre_hook(lambda m, a: calls.append(1))
    before = window.current_map().copy()
    drawn = []
    window.overlayDrawn.connect(lambda: drawn.append(1))
    for kind_index in range(3):
        window.attention.kind.setCurrentIndex(kind_index)
        window.attention.layer.setValue(0)
        window.attention.discard.setValue(50)
        window.attention.opacity.setValue(30)
        window.attention.cmap.setCurrentText("viridis")
    after = window.current_map()
    worker_barrier(qtbot, window)  # a forward pass asked for by mistake would have run by now
    hook.remove()
    assert len(drawn) >= 3 and not calls
    assert not np.allclose(before, after)


def test_hover_shows_that_patch_row(qtbot, window, tmp_path):
    path, _ = _shape_file(tmp_path, 6)
    window.add_paths([str(path)])
    _wait_result(qtbot, window, str(path))
    qtbot.waitUntil(lambda: window.current_map() is not None, timeout=30_000)
    cls_map = window.current_map().copy()
    # A real mouse move over the centre of patch (2, 3), mapped through the geometry.
    from PySide6.QtTest import QTest

    geom = window.items[str(path)].result.geometry
    x, y = geom.patch_center(2, 3)
    z, off = window.view._transform()
    QTest.mouseMove(window.view, QPoint(round(off.x() + z * x), round(off.y() + z * y)))
    qtbot.waitUntil(lambda: window.overlay.hover_token is not None, timeout=5_000)
    row_map = window.current_map()
    assert window.overlay.hover_token == 1 + 2 * geom.patch_grid[1] + 3
    assert window.view._hover == (2, 3)
    assert not np.allclose(cls_map, row_map)
    window.view.hoverLeft.emit()
    np.testing.assert_allclose(window.current_map(), cls_map)


def test_broken_file_shows_error_and_next_file_works(qtbot, window, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    window.add_paths([str(bad)])
    item = _wait_result(qtbot, window, str(bad))
    assert item.error and "broken.jpg" in item.error
    path, _ = _shape_file(tmp_path, 2)
    window.add_paths([str(path)])
    assert _wait_result(qtbot, window, str(path)).result is not None


def test_close_during_inference_is_quick(qtbot, window, tmp_path):
    paths = [str(_shape_file(tmp_path, i % 10, seed=i)[0]) for i in range(12)]
    window.add_paths(paths)
    window.close()
    assert window.worker.thread.isFinished() and not STILL_RUNNING  # stopped between layers, in time


def test_screenshot_pixels_show_the_overlay_peak_inside_the_shape(qtbot, window, tmp_path):
    path, s = _shape_file(tmp_path, 5, size=(640, 360), seed=3)
    window.add_paths([str(path)])
    item = _wait_result(qtbot, window, str(path))
    window.view.set_show_grid(False)
    window.attention.cmap.setCurrentText("gray")  # brightness = attention
    window.attention.opacity.setValue(100)
    qtbot.wait(50)
    shot = window.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h = shot.width(), shot.height()
    arr = np.frombuffer(shot.constBits(), np.uint8, count=shot.sizeInBytes()).reshape(h, shot.bytesPerLine())
    arr = arr[:, : 3 * w].reshape(h, w, 3).astype(float)
    assert arr.std() > 10  # not blank
    dpr = shot.devicePixelRatio()
    origin = window.view.mapTo(window, QPoint(0, 0))
    z, off = window.view._transform()
    ow, oh = item.result.geometry.original_size
    x0, y0 = (origin.x() + off.x()) * dpr, (origin.y() + off.y()) * dpr
    x1, y1 = x0 + ow * z * dpr, y0 + oh * z * dpr
    m = 4  # stay clear of the crop-box outline
    region = arr[int(y0) + m : int(y1) - m, int(x0) + m : int(x1) - m].mean(axis=2)
    py, px = np.unravel_index(np.argmax(region), region.shape)
    ox = (px + int(x0) + m - x0) / (z * dpr)
    oy = (py + int(y0) + m - y0) / (z * dpr)
    left, top, right, bottom = s.bbox
    assert left <= ox <= right and top <= oy <= bottom, ((ox, oy), s.bbox)
    # The same peak the command line reports.
    cx, cy = item.result.attention_peak
    pw, ph = item.result.geometry.patch_size_original
    assert abs(cx - ox) <= pw and abs(cy - oy) <= ph


def test_screenshot_command_line(tmp_path):
    import subprocess
    import sys

    path, _ = _shape_file(tmp_path, 5, size=(640, 360), seed=3)
    out = tmp_path / "shot.png"
    r = subprocess.run([sys.executable, "-m", "vit_desktop", "--screenshot", str(out), "--model", "demo-shapes", str(path)],
                       capture_output=True, text=True, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        shot = np.asarray(im.convert("RGB")).astype(int)
    assert shot.shape[0] >= 500 and shot.shape[1] >= 800 and shot.std() > 10
    bad = subprocess.run([sys.executable, "-m", "vit_desktop", "--screenshot", str(out), "--model", "nope-model"],
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert bad.returncode != 0 and "no model called" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_export_results_and_overlay_at_full_resolution(qtbot, window, tmp_path):
    import json

    path, s = _shape_file(tmp_path, 4, size=(500, 300))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    window.add_paths([str(path), str(bad)])
    _wait_result(qtbot, window, str(path))
    _wait_result(qtbot, window, str(bad))
    out = tmp_path / "res.json"
    window.files.write_results(str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["path"] for r in rows} == {str(path), str(bad)}
    good = next(r for r in rows if r["path"] == str(path))
    assert good["top_k"][0]["label"] == window.items[str(path)].result.top1.label
    assert "error" in next(r for r in rows if r["path"] == str(bad))
    window.gallery.select(window.items[str(path)])
    qtbot.waitUntil(lambda: window.current_map() is not None, timeout=60_000)
    png = tmp_path / "overlay.png"
    with qtbot.waitSignal(window.overlayExported, timeout=60_000) as sig:
        assert window.files.request_overlay(str(png))
    assert sig.args == [str(png), ""]
    img = Image.open(png).convert("RGB")
    assert img.size == (500, 300)
    diff = np.abs(np.asarray(img, int) - np.asarray(s.image, int)).mean()
    assert diff > 5


def test_export_keeps_names_that_are_not_utf8(qtbot, window, tmp_path):
    """File › Export Results writes a Latin-1 file name as the command line does (\\udcNN),
    in JSON lines and CSV, instead of failing on it."""
    import csv
    import json
    import os

    path, _ = _shape_file(tmp_path, 8)
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9 star.png")
    os.rename(path, odd)
    name = os.fsdecode(odd)  # holds a surrogate escape for the byte 0xE9
    window.add_paths([name])
    assert _wait_result(qtbot, window, name).result is not None
    shown = f"{tmp_path}/caf\\udce9 star.png"
    window.files.write_results(str(tmp_path / "r.json"))
    (row,) = [json.loads(line) for line in (tmp_path / "r.json").read_text(encoding="utf-8").splitlines()]
    assert row["path"] == shown and row["top_k"][0]["label"] == "star"
    window.files.write_results(str(tmp_path / "r.csv"))
    with open(tmp_path / "r.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["path"] for r in rows} == {shown} and rows[0]["label"] == "star"
    assert "r.csv" in window.statusBar().currentMessage()
