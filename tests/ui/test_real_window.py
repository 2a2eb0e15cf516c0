"""One real window on a real X server (Xvfb), as a person would start the app."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np


def _free_display() -> int:
    for n in range(90, 140):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


def test_app_opens_a_real_window_under_xvfb(tmp_path):
    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is required for this test (.ci/run installs it: apt-get install xvfb)"
    n = _free_display()
    server = subprocess.Popen([xvfb, f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/tmp/.X11-unix/X{n}") and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
        env.update(DISPLAY=f":{n}", QT_QPA_PLATFORM="xcb", VIT_DESKTOP_NO_DIALOGS="1")
        from vit_desktop.core.demo.shapes import generate

        img = tmp_path / "star.png"
        generate(np.random.default_rng(1), label=8, size=(500, 400)).image.save(img)
        code = (
            "import sys\n"
            "from PySide6.QtCore import QTimer, QSettings\n"
            "from vit_desktop.ui.app import make_app\n"
            "from vit_desktop.ui.main_window import MainWindow\n"
            "from vit_desktop.ui.settings import Settings\n"
            "app = make_app([])\n"
            f"win = MainWindow(Settings(QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat)), 'demo-shapes', 'cpu')\n"
            "win.show()\n"
            f"win.add_paths([{str(img)!r}])\n"
            "def check():\n"
            "    print('platform', app.platformName(), 'visible', win.isVisible(), 'exposed', win.windowHandle().isExposed())\n"
            "    item = win.items.get(" + repr(str(img)) + ")\n"
            "    print('top1', item.result.top1.label if item and item.result else None)\n"
            "    win.close(); app.quit()\n"
            "win.overlayDrawn.connect(lambda: QTimer.singleShot(100, check))\n"
            "QTimer.singleShot(90000, lambda: (print('timeout'), app.quit()))\n"
            "sys.exit(app.exec())\n"
        )
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=150)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "platform xcb visible True exposed True" in r.stdout, r.stdout + r.stderr[-2000:]
        assert "top1 star" in r.stdout
        assert "QThread" not in r.stderr and "Destroyed while" not in r.stderr
    finally:
        server.terminate()
        server.wait(10)
