"""Creating the QApplication and the window; ``--screenshot`` for tests and docs."""

from __future__ import annotations

import argparse
import os
import sys

from PySide6.QtCore import QCoreApplication, QSettings, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from ..logs import get_logger
from ..options import window_parser

log = get_logger("app")


def parse_args(argv: list[str]) -> argparse.Namespace:
    return window_parser().parse_args(argv)


def make_app(argv: list[str]) -> QApplication:
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    QCoreApplication.setOrganizationName("ViT Desktop")
    QCoreApplication.setApplicationName("ViT Desktop")
    from .app_icon import APP_ID, app_icon

    app.setWindowIcon(app_icon())
    QGuiApplication.setDesktopFileName(APP_ID)  # Wayland/X11: ties windows to the .desktop file
    return app


def _log_uncaught() -> None:
    """An exception escaping a Qt slot (GUI thread) or a Python thread goes to the log file
    with its traceback; a windowed build has no console to print it to."""
    import threading

    previous = sys.excepthook

    def hook(kind, value, tb) -> None:
        log.error("uncaught exception", exc_info=(kind, value, tb))
        if sys.stderr is not None:
            previous(kind, value, tb)

    def thread_hook(args) -> None:
        if args.exc_type is not SystemExit:
            log.error("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # fmt: skip

    sys.excepthook = hook
    threading.excepthook = thread_hook


def run_app(argv: list[str]) -> int:
    args = parse_args(argv)
    _log_uncaught()
    if args.screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        os.environ["VIT_DESKTOP_NO_DIALOGS"] = "1"
    app = make_app([])
    instance, single = None, not (args.screenshot or args.settings)
    if single:  # "Open with" while a window is open: hand the images to it
        from . import single_instance

        if single_instance.enabled():
            instance = single_instance.claim(args.images, forward=not (args.model or args.device))
            if instance is None:
                return 0
    from .main_window import MainWindow
    from .settings import Settings

    qs = QSettings(args.settings, QSettings.Format.IniFormat) if args.settings else None
    if args.screenshot and qs is None:
        import atexit
        import shutil
        import tempfile

        scratch = tempfile.mkdtemp(prefix="vit-desktop-screenshot-")  # settings of this run only
        atexit.register(shutil.rmtree, scratch, True)
        qs = QSettings(os.path.join(scratch, "screenshot.ini"), QSettings.Format.IniFormat)
    win = MainWindow(Settings(qs), model=args.model, device=args.device)
    _trace_events(win)
    if single:
        single_instance.connect_window(win, instance)
    win.show()
    if args.images:
        win.add_paths(args.images)
    if args.explain:
        _explain_when_shown(win, args.explain)
    if args.screenshot:
        return _exit_now_if_stuck(_screenshot(app, win, args.screenshot, expect_result=bool(args.images)))
    return _exit_now_if_stuck(app.exec())


def _exit_now_if_stuck(rc: int) -> int:
    """If the worker could not stop within 2 s of closing (it was importing PyTorch or
    reading a file), end the process here: letting Python tear down a running QThread
    would abort it.  Settings were saved on close; the log is flushed first."""
    from .main_window import STILL_RUNNING

    if not any(w.thread.isRunning() for w in STILL_RUNNING):
        return rc
    import logging

    log.warning("exiting while the worker was still busy")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(rc)


def _trace_events(win) -> None:
    """With ``VIT_DESKTOP_TRACE=FILE``, append ``EVENT WALLCLOCK`` lines for start-up timing:
    ``window_shown`` (with whether torch was imported yet), ``model_ready`` and
    ``first_prediction_drawn``.  Used by the benchmarks; off otherwise."""
    path = os.environ.get("VIT_DESKTOP_TRACE")
    if not path:
        return
    import time

    seen: set[str] = set()

    def mark(event: str, extra: str = "") -> None:
        if event in seen:
            return
        seen.add(event)
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"{event} {time.time():.6f}{extra}\n")
        except OSError:
            log.warning("could not write the trace file %s", path)

    # A zero timer fires once the event loop has processed the show (the window is mapped).
    QTimer.singleShot(0, lambda: mark("window_shown", f" torch_imported={'torch' in sys.modules}"))
    win.modelReady.connect(lambda _id: mark("model_ready"))
    win.overlayDrawn.connect(lambda: mark("first_prediction_drawn"))


def _explain_when_shown(win, label: str) -> None:
    """``--explain LABEL``: once the first image is on screen with the model's labels known,
    choose that class (its class-specific map follows); an unknown label is said once."""
    state = {"done": False}

    def try_now() -> None:
        names = win.explain.names
        if state["done"] or not names or win.session.shown is None or win.session.shown.result is None:
            return
        state["done"] = True
        wanted = label.casefold()
        index = next((i for i, n in enumerate(names) if n.casefold() == wanted), None)
        if index is None:
            win.status.say(f"--explain: the model has no class called {label!r:.60}", 15000)
            return
        win.explain.choose(index)

    win.overlayDrawn.connect(try_now)


def _screenshot(app: QApplication, win, out: str, expect_result: bool, timeout_ms: int = 120_000) -> int:
    state = {"rc": None}

    def done(rc: int, message: str | None = None) -> None:
        if state["rc"] is None:
            state["rc"] = rc
            if message:
                (sys.stderr or sys.stdout).write(f"vit-desktop: {message}\n")
            win.close()
            app.quit()

    def shoot() -> None:
        app.processEvents()
        if not win.grab().save(out):
            done(2, f"could not write {out}")
        else:
            done(0)

    poll = QTimer()
    poll.setInterval(50)

    def ready() -> None:  # every image done and the current overlay drawn (a class map included)
        if win.idle() and not win.explain.busy() and (not expect_result or win.current_map() is not None):
            poll.stop()
            shoot()

    poll.timeout.connect(ready)

    def on_drawn() -> None:
        if not poll.isActive():
            poll.start()

    def on_failed(what: str, message: str) -> None:
        done(2, message)

    # The window's own signals arrive on the GUI thread; the worker's would not.
    win.overlayDrawn.connect(on_drawn)
    win.errorShown.connect(on_failed)
    if not expect_result:
        win.modelReady.connect(lambda _id: poll.start())
    QTimer.singleShot(timeout_ms, lambda: done(2, "timed out waiting for the result"))
    app.exec()
    return state["rc"] if state["rc"] is not None else 2
