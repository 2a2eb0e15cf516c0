"""The soak run, in its own process (an abort inside Qt ends only this process): the real
window on the demo model, HOVERS mouse moves across patches, then a folder of N images
through the gallery.  Prints one JSON line when it is done, alive."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ["VIT_DESKTOP_NO_DIALOGS"] = "1"
os.environ["VIT_DESKTOP_SINGLE_INSTANCE"] = "0"

from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from vit_desktop.ui.main_window import MainWindow  # noqa: E402
from vit_desktop.ui.settings import Settings  # noqa: E402


def wait(app: QApplication, done, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.002)


def main(image: str, folder: str, hovers: int, ini: str) -> None:
    app = QApplication([])
    win = MainWindow(Settings(QSettings(ini, QSettings.Format.IniFormat)), model="demo-shapes", device="cpu")
    win.resize(800, 500)
    win.show()
    win.attention.kind.setCurrentIndex(win.attention.kind.findData("cls"))
    wait(app, lambda: win.model_ready, 120, "the model")
    win.add_paths([image])
    wait(app, lambda: win.current_map() is not None, 120, "the first overlay")
    drawn = []
    win.overlayDrawn.connect(lambda: drawn.append(1))
    # Real mouse moves over the centres of every patch, mapped through the geometry.
    geom = win.items[image].result.geometry
    rows, cols = geom.patch_grid
    z, off = win.view._transform()
    points = []
    for r in range(rows):
        for c in range(cols):
            x, y = geom.patch_center(r, c)
            points.append(QPoint(round(off.x() + z * x), round(off.y() + z * y)))
    t0 = time.monotonic()
    for i in range(hovers):  # real mouse-move events, delivered to the view as Qt would
        pos = QPointF(points[i % len(points)])
        move = QMouseEvent(QEvent.Type.MouseMove, pos, win.view.mapToGlobal(pos), Qt.MouseButton.NoButton,
                           Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)  # fmt: skip
        QApplication.sendEvent(win.view, move)
        if i % 20 == 0:
            app.processEvents()  # and the window repaints as it would between moves
    app.processEvents()
    hover_s = time.monotonic() - t0
    t0 = time.monotonic()
    win.add_paths([folder])
    wait(app, win.idle, 1200, "the folder run")
    folder_s = time.monotonic() - t0
    classified = sum(i.result is not None for i in win.items.values())
    print(json.dumps({"redraws": len(drawn), "hover_s": round(hover_s, 1), "classified": classified,
                      "gallery_rows": win.gallery.count(), "folder_s": round(folder_s, 1)}), flush=True)  # fmt: skip
    win.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
