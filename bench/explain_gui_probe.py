"""Run in its own process by explain_figures.py: the real main window, offscreen, on a ViT
checkpoint; classifies an image, then asks for class-specific maps (Relevance, Chefer et al.)
of three classes, and measures

* the longest gap between ticks of a 5 ms timer on the GUI thread while each map is computed
  in the worker (the backward pass must never stall the window),
* going back to a class already seen: the choice → the overlay drawn from the cache.

Prints one JSON object.  Usage: python explain_gui_probe.py MODEL.pth IMAGE
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["VIT_DESKTOP_NO_DIALOGS"] = "1"

from gui_probe import Ticker, spin, wait_for  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def main(argv: list[str]) -> int:
    model_path, image = argv[0], argv[1]
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from vit_desktop.ui.main_window import MainWindow
    from vit_desktop.ui.settings import Settings

    ini = os.path.join(tempfile.mkdtemp(prefix="vit-bench-explain-"), "settings.ini")
    win = MainWindow(Settings(QSettings(ini, QSettings.Format.IniFormat)), model=model_path)
    win.show()
    if wait_for(win.modelReady, 300) is None:
        print(json.dumps({"error": "the model did not load"}))
        return 1
    win.add_paths([image])
    if wait_for(win.overlayDrawn, 300) is None:
        print(json.dumps({"error": "no result was drawn"}))
        return 1
    spin(0.5)
    ticker = Ticker()
    computed, stalls = [], []
    for target in (1, 2, 3):  # three classes, each computed in the worker (the first switches the map)
        ticker.max_gap = 0.0
        ticker.start()
        t0 = time.perf_counter()
        arrived: list[float] = []

        def on_map(ans, want=target, seen=arrived) -> None:
            if ans.request.target == want and not seen:
                seen.append(time.perf_counter())

        win.explain.mapArrived.connect(on_map)
        win.explain.choose(target)
        deadline = time.perf_counter() + 300
        while not arrived and time.perf_counter() < deadline:
            spin(0.005)
        win.explain.mapArrived.disconnect(on_map)
        got = arrived[0] if arrived else None
        spin(0.1)
        ticker.stop()
        if got is None:
            print(json.dumps({"error": "no class-specific map arrived"}))
            return 1
        computed.append(got - t0)
        stalls.append(ticker.max_gap)
    cached = []
    for target in (1, 2, 3, 1):  # back to classes already seen: from the cache
        t0 = time.perf_counter()
        win.explain.choose(target)
        app.processEvents()
        if win.current_map() is None:
            print(json.dumps({"error": "a cached map was not there"}))
            return 1
        cached.append(time.perf_counter() - t0)
    win.close()
    app.processEvents()
    print(json.dumps({
        "max_gap_ms": max(stalls) * 1000,
        "computed_ms": [t * 1000 for t in computed],
        "cached_ms": [t * 1000 for t in cached],
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
