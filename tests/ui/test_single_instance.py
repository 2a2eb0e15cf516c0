"""One window per user: a second start hands its images to the running window.

Every test uses its own socket name (``VIT_DESKTOP_INSTANCE_NAME`` or ``name=``), so the
tests never talk to a copy of the app someone is running, nor to each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from PySide6.QtCore import QDir, QUrl
from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication, QWidget

from vit_desktop.ui import single_instance as si

CLIENT = (
    "import sys\n"
    "from vit_desktop.ui.single_instance import send_to_running\n"
    "print(send_to_running(sys.argv[2:], name=sys.argv[1]))\n"
)
RAW_CLIENT = (
    "import sys\n"
    "from PySide6.QtNetwork import QLocalSocket\n"
    "s = QLocalSocket(); s.connectToServer(sys.argv[1]); assert s.waitForConnected(5000)\n"
    "s.write(sys.argv[2].encode() + b'\\n'); s.waitForBytesWritten(5000)\n"
    "reply = b''\n"
    "while b'\\n' not in reply and s.waitForReadyRead(5000): reply += bytes(s.readAll().data())\n"
    "print(reply.decode().strip())\n"
)


def _name() -> str:
    return f"vit-desktop-test-{uuid.uuid4().hex[:12]}"


def _client(code: str, *args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_names_are_per_user_and_private(monkeypatch, tmp_path):
    env = {"USER": "alice", "LOGNAME": "alice", "HOME": "/home/alice"}
    monkeypatch.setattr(si.sys, "platform", "darwin")  # no XDG_RUNTIME_DIR there: a name in the temp folder
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    alice = si.server_name({})
    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("LOGNAME", "bob")
    monkeypatch.setenv("HOME", "/home/bob")
    bob = si.server_name({})
    assert alice != bob and alice.startswith("vit-desktop-") and bob.startswith("vit-desktop-")
    assert alice.replace("-", "").isalnum()  # a valid pipe name on Windows too
    monkeypatch.setattr(si.sys, "platform", "linux")
    assert si.server_name({"XDG_RUNTIME_DIR": str(tmp_path)}) == str(tmp_path / "vit-desktop.sock")
    assert si.server_name({"VIT_DESKTOP_INSTANCE_NAME": "x", "XDG_RUNTIME_DIR": str(tmp_path)}) == "x"
    assert si.enabled({}) and not si.enabled({"VIT_DESKTOP_SINGLE_INSTANCE": "0"})


def test_nobody_listening_means_start_a_window(qapp):
    t0 = time.monotonic()
    assert si.send_to_running(["a.png"], name=_name()) is False
    assert time.monotonic() - t0 < 5  # did not hang (generous: the machine may be busy)


def test_paths_from_a_second_start_reach_the_first_made_absolute(qtbot, tmp_path):
    server = si.SingleInstance(_name())
    assert server.listen() and server.is_listening()
    names = ["star.png", "sub dir/ünïcode ☆.png", "file:///elsewhere/x.png"]
    with qtbot.waitSignal(server.pathsReceived, timeout=30000) as got:
        proc = _client(CLIENT, server.name, *names, cwd=tmp_path)
    out, err = proc.communicate(timeout=30)
    assert out.strip() == "True", err
    assert got.args[0] == [str(tmp_path / "star.png"), str(tmp_path / "sub dir" / "ünïcode ☆.png"),
                           "file:///elsewhere/x.png"]  # fmt: skip
    server.close()


def test_a_start_with_no_images_still_reaches_the_window(qtbot, tmp_path):
    server = si.SingleInstance(_name())
    assert server.listen()
    with qtbot.waitSignal(server.pathsReceived, timeout=30000) as got:
        proc = _client(CLIENT, server.name)
    assert proc.communicate(timeout=30)[0].strip() == "True"
    assert got.args[0] == []  # the window comes to the front with nothing new to open
    server.close()


def test_a_garbled_message_is_refused_and_the_server_keeps_serving(qtbot):
    server = si.SingleInstance(_name())
    assert server.listen()
    seen = []
    server.pathsReceived.connect(seen.append)
    proc = _client(RAW_CLIENT, server.name, '{"not": "paths"}')
    qtbot.waitUntil(lambda: proc.poll() is not None, timeout=30000)
    assert proc.communicate()[0].strip() == "error" and seen == []
    with qtbot.waitSignal(server.pathsReceived, timeout=30000):
        proc = _client(CLIENT, server.name, "/tmp/ok.png")
    assert proc.communicate(timeout=30)[0].strip() == "True"
    server.close()


def test_a_second_server_does_not_take_the_name_from_a_live_one(qapp):
    first = si.SingleInstance(_name())
    assert first.listen()
    second = si.SingleInstance(first.name)
    assert second.listen() is False and not second.is_listening()
    assert first.is_listening()
    first.close()
    assert si.SingleInstance(first.name).listen()  # once the first has closed, the name is free


def test_a_socket_left_by_a_crashed_copy_is_replaced(qapp, tmp_path):
    name = _name()
    holder = _client(
        "import sys, time\n"
        "from PySide6.QtCore import QCoreApplication\n"
        "from vit_desktop.ui.single_instance import SingleInstance\n"
        "app = QCoreApplication([])\n"
        "s = SingleInstance(sys.argv[1]); print(s.listen(), flush=True); time.sleep(120)\n",
        name,
    )
    assert holder.stdout.readline().strip() == "True"
    holder.kill()  # no clean-up: on Unix the socket file stays behind
    holder.communicate(timeout=10)
    if sys.platform != "win32":
        assert Path(QDir.tempPath(), name).exists()
    assert si.send_to_running([], name=name) is False
    server = si.SingleInstance(name)
    assert server.listen() and server.is_listening()
    server.close()


class _Window(QWidget):
    """Stands in for the main window: connect_window needs add_paths and a QWidget."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[list[str]] = []

    def add_paths(self, paths: list[str]) -> None:
        self.opened.append(list(paths))


def test_connect_window_routes_received_paths_and_macos_open_events(qtbot, monkeypatch):
    monkeypatch.setenv("VIT_DESKTOP_FILE_OPEN_EVENTS", "1")
    win = _Window()
    qtbot.addWidget(win)
    server = si.SingleInstance(_name())
    si.connect_window(win, server)
    server.pathsReceived.emit(["/pics/a.png", "/pics/b.png"])
    assert win.opened == [["/pics/a.png", "/pics/b.png"]] and win.isVisible()
    QApplication.sendEvent(QApplication.instance(), QFileOpenEvent("/pics/c.png"))
    QApplication.sendEvent(QApplication.instance(), QFileOpenEvent(QUrl.fromLocalFile("/pics/d.png")))
    assert win.opened[1:] == [["/pics/c.png"], ["/pics/d.png"]]


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content:
            return content
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s")


def test_open_with_while_the_app_runs_sends_the_image_to_the_running_window(tmp_path):
    from vit_desktop.core.demo.shapes import generate

    img = tmp_path / "star.png"
    generate(np.random.default_rng(1), label=8, size=(500, 400)).image.save(img)
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "VIT_DESKTOP_INSTANCE_NAME": _name(),
           "VIT_DESKTOP_TRACE": str(trace), "VIT_DESKTOP_NO_DIALOGS": "1",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}  # fmt: skip
    env.pop("VIT_DESKTOP_SINGLE_INSTANCE", None)
    first = subprocess.Popen([sys.executable, "-m", "vit_desktop"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _wait_for(trace, "window_shown", first, 120)
        second = subprocess.run([sys.executable, "-m", "vit_desktop", img.name], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 0, second.stderr
        # The first window had no image of its own: a drawn prediction is the handed-over one.
        _wait_for(trace, "first_prediction_drawn", first, 180)
        assert trace.read_text().count("window_shown") == 1  # the second start opened no window
        log = (Path(env["VIT_DESKTOP_LOG_DIR"]) / "vit-desktop.log").read_text(encoding="utf-8")
        assert "1 path(s) from another start" in log
    finally:
        first.terminate()
        first.communicate(timeout=30)
