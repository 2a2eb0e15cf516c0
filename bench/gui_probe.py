"""Run in its own process by app_figures.py: the real main window, offscreen, on a ViT
checkpoint; drops a large JPEG on it while moving the layer slider and measures

* the longest gap between ticks of a 5 ms timer on the GUI thread (stalls),
* drop-to-result: ``add_paths`` → the window's ``overlayDrawn`` (the result drawn, from the
  draft decode), and drop-to-sharp: → ``sharpShown`` (the sharp screen copy in its place),
* in the same process, between drops: the bare forward pass of the same weights (batch 1)
  and our core path alone (decode, preprocess, forward with capture).

Prints one JSON object.  Usage: python gui_probe.py MODEL.pth IMAGE.jpg DROPS SLIDER_AFTER_S
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["VIT_DESKTOP_NO_DIALOGS"] = "1"

from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


class Ticker:
    """A 5 ms timer on the GUI thread; any longer gap between its ticks is a stall."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.last: float | None = None
        self.max_gap = 0.0
        self.ticks = 0

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self._tick()
        self.last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
            self.ticks += 1
        self.last = now


def wait_for(signal, timeout_s: float) -> float | None:
    """Run the event loop until ``signal`` fires (its time) or the timeout (None)."""
    loop = QEventLoop()
    got: list[float] = []

    def on(*_args) -> None:
        if not got:
            got.append(time.perf_counter())
        loop.quit()

    signal.connect(on)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(on)
    return got[0] if got else None


def spin(seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def main(argv: list[str]) -> int:
    model_path, image, drops, slider_after = argv[0], argv[1], int(argv[2]), float(argv[3])
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from vit_desktop.ui.main_window import MainWindow
    from vit_desktop.ui.settings import Settings

    ini = os.path.join(tempfile.mkdtemp(prefix="vit-bench-gui-"), "settings.ini")
    win = MainWindow(Settings(QSettings(ini, QSettings.Format.IniFormat)), model=model_path)
    errors: list[str] = []
    win.errorShown.connect(lambda what, msg: errors.append(f"{what}: {msg}"))
    win.show()
    if wait_for(win.modelReady, 300) is None:
        print(json.dumps({"error": "the model did not load", "errors": errors}))
        return 1

    import torch

    from vit_desktop.core.checkpoints import load_checkpoint
    from vit_desktop.core.classifier import Classifier

    built = load_checkpoint(model_path)
    core = Classifier(
        built.module, built.preprocessing, built.labels, "probe", built.name, torch.device("cpu")
    )
    h, w = built.preprocessing.input_size
    x = torch.randn(1, 3, h, w)

    def bare() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            built.module(x)
        return time.perf_counter() - t0

    def core_path() -> float:
        t0 = time.perf_counter()
        core.classify(image, top_k=20, attention="full")
        return time.perf_counter() - t0

    slider = win.attention.layer
    mover = QTimer()
    mover.setInterval(30)
    mover.timeout.connect(lambda: slider.setValue((slider.value() + 1) % (slider.maximum() + 1)))
    ticker = Ticker()
    bare_t, core_t, drop_t, sharp_t, render_t = [], [], [], [], []
    for r in range(drops + 1):  # the first drop warms the worker up and is not timed
        if r > 0:
            bare_t.append(bare())
            core_t.append(core_path())
            bare_t.append(bare())
        spin(0.2)
        ticker.start()
        mover.start()
        t0 = time.perf_counter()
        win.add_paths([image])
        drawn = wait_for(win.overlayDrawn, 300)
        if drawn is None:
            print(json.dumps({"error": "no result was drawn", "errors": errors}))
            return 1
        shown = win.session.shown
        sharp = wait_for(win.sharpShown, 300) if shown is not None and shown.sharp_asked else None
        if r > 0:
            drop_t.append(drawn - t0)
            if sharp is not None:
                sharp_t.append(sharp - t0)
        # Moving the slider over a shown result: each move re-renders on the GUI thread.
        n0 = ticker.ticks
        t1 = time.perf_counter()
        spin(slider_after)
        render_t.append((time.perf_counter() - t1, ticker.ticks - n0))
        mover.stop()
        ticker.stop()
    win.close()
    app.processEvents()
    print(json.dumps({
        "max_gap_ms": ticker.max_gap * 1000,
        "bare_ms": [t * 1000 for t in bare_t],
        "core_ms": [t * 1000 for t in core_t],
        "drop_ms": [t * 1000 for t in drop_t],
        "sharp_ms": [t * 1000 for t in sharp_t],
        "layers": slider.maximum() + 1,
        "errors": errors,
        "torch_threads": torch.get_num_threads(),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
