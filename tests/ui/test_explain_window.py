"""Why *this* class, in the window: prediction rows and the class picker choose the class, the
class-specific maps come from the worker (equal to core.explain's), cached per class, the
faithfulness plot, "Try sample images", and a GUI thread that keeps running during a backward
pass.  Offscreen, real Qt events, the real demo model."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtTest import QTest

from tests.helpers import wait_result, worker_barrier
from vit_desktop.core import explain, faithfulness
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo import samples
from vit_desktop.core.demo.shapes import CLASSES, generate_scene
from vit_desktop.ui import methods
from vit_desktop.ui.jobs import JobKind


@pytest.fixture(autouse=True)
def _samples_cache(tmp_path, monkeypatch):
    """Sample images land in this test's own cache folder (before the window is made)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def clf():
    """The demo model, loaded apart from the window's (the reference computations)."""
    return load_classifier("demo-shapes", device="cpu")


def _scene(tmp_path, labels=(8, 5), seed=4):
    s = generate_scene(np.random.default_rng(seed), labels=labels, size=(360, 260))
    path = tmp_path / f"scene-{CLASSES[labels[0]]}-{CLASSES[labels[1]]}.png"
    s.image.save(path)
    return str(path)


def _recorder(signal) -> list:
    got: list = []
    signal.connect(lambda *args: got.append(args))
    return got


def _click(widget) -> None:
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton, pos=widget.rect().center())


def _open(qtbot, window, path: str):
    window.add_paths([path])
    item = wait_result(qtbot, window, path)
    qtbot.waitUntil(lambda: window.current_map() is not None, timeout=30_000)
    return item


def _batch(clf, path: str) -> torch.Tensor:
    return torch.from_numpy(clf.prepare(path).array)[None]


def test_the_panel_offers_the_core_methods_with_their_controls(window):
    combo = window.attention.kind
    offered = [combo.itemData(i) for i in range(combo.count()) if combo.itemData(i) is not None]
    assert [k for k in offered if methods.is_class_specific(k)] == list(methods.CLASS_METHODS)
    assert set(methods.CLASS_METHODS) == explain.CLASS_SPECIFIC
    for m in methods.CLASS_METHODS:
        assert set(methods.PANEL_CONTROLS[m]) <= set(explain.CONTROLS[m])


def test_a_click_on_a_prediction_explains_that_class_and_going_back_is_cached(qtbot, window, clf, tmp_path):
    path = _scene(tmp_path)
    item = _open(qtbot, window, path)
    rows = window.predictions.row_widgets
    assert len(rows) == 5 and rows[0].chosen and not rows[1].chosen  # top-1 by default
    assert window.attention.settings().kind == "rollout"  # the default map: class-agnostic
    asked = _recorder(window.explain.requestMap)
    arrived = _recorder(window.explain.mapArrived)

    # A real click on the second row: the Map becomes Relevance (Chefer et al.) for that class.
    second = rows[1].index
    with qtbot.waitSignal(window.explain.mapArrived, timeout=60_000):
        _click(rows[1])
    assert window.attention.settings().kind == "chefer"
    assert rows[1].chosen and not rows[0].chosen
    assert window.explain.target_of(item) == second
    map_second, overlay_second = window.current_map().copy(), window.view._overlay
    reference = explain.explain(clf, _batch(clf, path), "chefer", second)
    np.testing.assert_allclose(map_second, reference, rtol=1e-4, atol=1e-6)

    first = rows[0].index
    with qtbot.waitSignal(window.explain.mapArrived, timeout=60_000):
        _click(rows[0])
    map_first = window.current_map().copy()
    np.testing.assert_allclose(map_first, explain.explain(clf, _batch(clf, path), "chefer", first),
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    assert not np.allclose(map_first / map_first.max(), map_second / map_second.max(), atol=0.05)
    assert window.view._overlay is not overlay_second

    # Back to the second class: from the cache, at once, no request to the worker.
    requests = len(asked)
    timer = QElapsedTimer()
    timer.start()
    _click(rows[1])
    switch_ms = timer.elapsed()
    np.testing.assert_array_equal(window.current_map(), map_second)
    worker_barrier(qtbot, window)  # anything asked by mistake would have come back by now
    assert len(asked) == requests and len(arrived) == 2
    assert switch_ms < 1000, switch_ms  # measured ~10 ms; generous for a busy machine
    print(f"cached class switch: {switch_ms} ms")

    # Token Grad-CAM takes the layer; a control the method does not take is no new map.
    window.attention.kind.setCurrentIndex(window.attention.kind.findData("gradcam"))
    qtbot.waitUntil(lambda: len(arrived) == 3, timeout=60_000)
    np.testing.assert_allclose(window.current_map(), explain.explain(clf, _batch(clf, path), "gradcam", second,
                               layer=window.attention.settings().layer), rtol=1e-4, atol=1e-6)  # fmt: skip
    assert window.attention.layer.isEnabled() and not window.attention.head.isEnabled()
    window.attention.discard.setValue(40)
    worker_barrier(qtbot, window)
    assert len(arrived) == 3

    # The class picker reaches a class outside the top 5: type part of its name, Enter.
    top5 = {r.index for r in rows}
    other = next(i for i in range(len(CLASSES)) if i not in top5)
    picker = window.predictions.picker
    assert picker.count() == len(CLASSES)
    picker.lineEdit().clear()
    with qtbot.waitSignal(window.explain.mapArrived, timeout=60_000):
        QTest.keyClicks(picker.lineEdit(), CLASSES[other].upper())
        QTest.keyClick(picker.lineEdit(), Qt.Key.Key_Return)
    assert window.explain.target_of(item) == other and not any(r.chosen for r in rows)
    assert asked[-1][4] == methods.MapRequest.of("gradcam", other, window.attention.settings().layer, "mean")

    # A large model's float16 queries and keys: the panel says its maps are approximate.
    assert window.attention.exact_note.isHidden()
    att = item.result.attention
    half = dataclasses.replace(att, q=att.q.astype(np.float16), k=att.k.astype(np.float16))
    window.overlay.show(
        dataclasses.replace(item, result=dataclasses.replace(item.result, attention=half)), ""
    )
    assert not window.attention.exact_note.isHidden()


def test_score_this_map_plots_the_faithfulness_curves(qtbot, window, clf, tmp_path):
    path = _scene(tmp_path, labels=(3, 6), seed=7)
    item = _open(qtbot, window, path)
    box = window.explain.box
    assert box.button.isEnabled() and box.plot.curves is None
    grid = window.overlay.plain_map().copy()  # the rollout map on screen
    with qtbot.waitSignal(window.explain.scoreArrived, timeout=120_000) as sig:
        _click(box.button)
    f = sig.args[0].faithfulness
    assert box.plot.curves is f and not box.button.isEnabled()
    ref = faithfulness.curves(clf, _batch(clf, path), grid, item.result.top1.index)
    for name in ("fractions", "deletion", "insertion", "random_deletion", "random_insertion"):
        np.testing.assert_allclose(getattr(f, name), getattr(ref, name), rtol=1e-4, atol=1e-5)
    text = box.numbers.text()
    for value in (ref.deletion_auc, ref.insertion_auc, ref.random_deletion_auc, ref.random_insertion_auc):
        assert f"{value:.3f}" in text
    # Another map is not scored yet: scored, it reuses the random-order curves of the first.
    window.attention.kind.setCurrentIndex(window.attention.kind.findData("cls"))
    assert box.plot.curves is None and box.button.isEnabled()
    cls_grid = window.overlay.plain_map().copy()
    with qtbot.waitSignal(window.explain.scoreArrived, timeout=120_000) as sig:
        _click(box.button)
    g = sig.args[0].faithfulness
    ref = faithfulness.curves(clf, _batch(clf, path), cls_grid, item.result.top1.index)
    np.testing.assert_allclose(g.deletion, ref.deletion, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g.insertion, ref.insertion, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(g.random_deletion, f.random_deletion)
    assert box.plot.curves is g
    # Going back shows the cached score again.
    window.attention.kind.setCurrentIndex(window.attention.kind.findData("rollout"))
    assert box.plot.curves is f


def test_try_sample_images_fills_the_empty_window(qtbot, window):
    button = window.samples.button
    assert button.isVisible() and not window.items
    _click(button)
    qtbot.waitUntil(lambda: len(window.items) == samples.SAMPLE_COUNT, timeout=60_000)
    assert not button.isVisible()
    scenes = round(samples.SAMPLE_COUNT * samples.SAMPLE_SCENE_FRACTION)
    assert scenes and sum("-and-" in k for k in window.items) == scenes  # two-shape scenes among them
    assert all(k.startswith(str(samples.cache_folder())) for k in window.items)  # written, not downloaded
    qtbot.waitUntil(lambda: all(i.result is not None for i in window.items.values()), timeout=60_000)
    qtbot.waitUntil(lambda: window.current_map() is not None, timeout=30_000)
    # The first class-specific map is one click away.
    with qtbot.waitSignal(window.explain.mapArrived, timeout=60_000):
        _click(window.predictions.row_widgets[0])
    assert window.attention.settings().kind == methods.FIRST_CLASS_METHOD


def test_the_gui_thread_runs_on_while_a_map_computes_and_cancel_stops_it(
    qtbot, window, tmp_path, monkeypatch
):
    from vit_desktop.core import explain_methods
    from vit_desktop.core.capture import attention_modules

    path = _scene(tmp_path, labels=(1, 9), seed=2)
    item = _open(qtbot, window, path)
    # A slow model: every attention layer waits 30 ms, as a big model on a CPU would compute,
    # and occlusion runs 8 batches of 8 shortened sequences (progress, and time to press Cancel).
    monkeypatch.setattr(explain_methods, "OCCLUSION_BATCH", 8)
    module = window.worker.worker.clf.module
    hooks = [m.register_forward_pre_hook(lambda m, a: time.sleep(0.03)) for m in attention_modules(module)]
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    jobs = []
    window.worker.worker.jobUpdate.connect(lambda u: jobs.append(u))
    try:
        timer.start()
        t0 = time.perf_counter()
        with qtbot.waitSignal(window.explain.mapArrived, timeout=120_000):
            window.attention.kind.setCurrentIndex(window.attention.kind.findData("occlusion"))
            request_s = time.perf_counter() - t0
            qtbot.waitUntil(lambda: "Computing Token occlusion" in window.statusBar().currentMessage(),
                            timeout=10_000)  # fmt: skip
        busy_s = time.perf_counter() - t0
        timer.stop()
        gaps = np.diff([t0, *ticks])
        print(f"map request returned in {request_s * 1000:.0f} ms; {busy_s:.1f} s computing; "
              f"longest GUI stall {gaps.max() * 1000:.0f} ms over {len(ticks)} ticks")  # fmt: skip
        assert request_s < 0.2 and busy_s > 0.5
        assert len(ticks) > busy_s / 0.1 and gaps.max() < 0.25
        shown = [u for u in jobs if u.kind is JobKind.EXPLAIN and not u.finished]
        assert shown and all(u.total == 8 and u.text.startswith("Token occlusion") for u in shown)
        assert [u.done for u in shown] == sorted(u.done for u in shown) and shown[-1].done >= 6
        assert window.current_map() is not None and window.statusBar().currentMessage() == ""
        # Cancel (the status bar's button) stops the next one; nothing is cached for it.
        other = window.predictions.row_widgets[2].index
        _click(window.predictions.row_widgets[2])
        qtbot.waitUntil(lambda: window.status.cancel_button.isVisible(), timeout=10_000)
        _click(window.status.cancel_button)
        qtbot.waitUntil(lambda: "cancelled" in window.statusBar().currentMessage(), timeout=60_000)
    finally:
        for h in hooks:
            h.remove()
    request = methods.MapRequest.of("occlusion", other, -1, "mean")
    assert request not in window.explain.entry(item).maps
    assert not window.status.cancel_button.isVisible()


def test_the_explain_option_shows_that_classs_map_once_the_image_is_on_screen(qtbot, window, clf, tmp_path):
    from vit_desktop.ui.app import _explain_when_shown

    path = _scene(tmp_path)
    _explain_when_shown(window, "Square")  # --explain Square (any case)
    item = _open(qtbot, window, path)
    qtbot.waitUntil(lambda: window.attention.settings().kind == "chefer" and not window.explain.busy(),
                    timeout=60_000)  # fmt: skip
    qtbot.waitUntil(lambda: window.current_map() is not None, timeout=30_000)
    square = CLASSES.index("square")
    assert window.explain.target_of(item) == square
    want = explain.explain(clf, _batch(clf, path), "chefer", square)
    np.testing.assert_allclose(window.current_map(), want, rtol=1e-4, atol=1e-6)
