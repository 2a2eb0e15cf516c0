"""One window per user: a second start hands its images to the running window.

Every test uses its own socket name (``VIT_DESKTOP_INSTANCE_NAME`` or ``name=``), so the
tests never talk to a copy of the app someone is running, nor to each other.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
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
    monkeypatch.setattr(si.sys, "platform", "win32")  # a named pipe there, named per user
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    alice = si.server_name({})
    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("LOGNAME", "bob")
    monkeypatch.setenv("HOME", "/home/bob")
    bob = si.server_name({})
    assert alice != bob and alice.startswith("vit-desktop-") and bob.startswith("vit-desktop-")
    assert alice.replace("-", "").isalnum()  # a valid pipe name
    monkeypatch.setattr(si.sys, "platform", "linux")
    assert si.server_name({"XDG_RUNTIME_DIR": str(tmp_path)}) == str(tmp_path / "vit-desktop.sock")
    assert si.server_name({"VIT_DESKTOP_INSTANCE_NAME": "x", "XDG_RUNTIME_DIR": str(tmp_path)}) == "x"
    assert si.enabled({}) and not si.enabled({"VIT_DESKTOP_SINGLE_INSTANCE": "0"})


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes there")
@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_without_a_runtime_folder_the_socket_is_in_a_private_folder_made_for_it(monkeypatch, tmp_path,
                                                                                 platform):  # fmt: skip
    monkeypatch.setattr(si.sys, "platform", platform)
    old = os.umask(0o022)
    try:
        name = si.server_name({"TMPDIR": str(tmp_path)})  # no XDG_RUNTIME_DIR
    finally:
        os.umask(old)
    folder = tmp_path / f"vit-desktop-{os.getuid()}"
    assert name == str(folder / "vit-desktop.sock")
    st = folder.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    assert si.server_name({"TMPDIR": str(tmp_path)}) == name  # the next start finds the same one


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes there")
@pytest.mark.parametrize("planted", ["open-to-others", "a-link", "a-file", "another-users"])
def test_a_folder_that_is_not_private_is_refused_and_a_window_opens(qapp, monkeypatch, tmp_path, planted):
    monkeypatch.setattr(si.sys, "platform", "linux")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    folder = tmp_path / f"vit-desktop-{os.getuid()}"
    if planted == "open-to-others":
        folder.mkdir()
        folder.chmod(0o777)
    elif planted == "a-link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    elif planted == "a-file":
        folder.write_text("")
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can give a folder to another user")
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
    assert si.server_name() is None
    instance = si.claim(["/pics/a.png"])  # not handed anywhere: this start opens its own window
    assert instance is not None and not instance.is_listening() and instance.name == ""
    assert not list(tmp_path.rglob("*.sock"))
    if planted == "a-link":
        assert not list((tmp_path / "elsewhere").iterdir())


def test_in_the_private_folder_a_second_start_reaches_the_first(qtbot, monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    server = si.SingleInstance()
    assert server.name == str(tmp_path / f"vit-desktop-{os.getuid()}" / "vit-desktop.sock")
    assert server.listen()
    with qtbot.waitSignal(server.pathsReceived, timeout=30000) as got:
        proc = _client(CLIENT, server.name, "/pics/a.png")
    assert proc.communicate(timeout=30)[0].strip() == "True"  # the peer check passed: same user
    assert got.args[0] == ["/pics/a.png"]
    server.close()


SQUATTER = (
    "import os, socket, sys\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777)\n"
    "os.setgid(65534); os.setuid(65534); s.listen(8)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.settimeout(3)\n"
    "    try:\n"
    "        c.sendall(b'ok\\n')\n"
    "        while data := c.recv(65536): print(repr(data), flush=True)\n"
    "    except OSError: pass\n"
    "    c.close()\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="another user's process needs root to start")  # fmt: skip
def test_a_socket_another_user_listens_on_gets_no_paths(qapp, tmp_path):
    """Another local user bound the name first and answers ``ok`` to anything: the second start
    must not send its paths there, and opens its own window."""
    name = str(tmp_path / "vit-desktop.sock")
    squatter = _client(SQUATTER, name)
    try:
        assert squatter.stdout.readline().strip() == "ready", squatter.stderr.read()
        assert os.stat(name).st_uid == 0  # bound by root, listening as nobody: only SO_PEERCRED tells
        assert si.send_to_running(["/home/me/secret-plans.png"], name=name) is False
        instance = si.claim(["/home/me/secret-plans.png"], name=name)
        assert instance is not None and not instance.is_listening()  # a window of our own
        time.sleep(0.5)  # what the squatter would print, it has printed by now
    finally:
        squatter.kill()
    out, _ = squatter.communicate(timeout=10)
    assert "secret" not in out and "paths" not in out


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


FILE_CLIENT = RAW_CLIENT.replace("sys.argv[2].encode()", "open(sys.argv[2], 'rb').read()")  # no size limit


@pytest.mark.parametrize(
    "message",
    ['{"paths": "/etc/passwd"}', "[" * 200_000 + "]" * 200_000, '{"paths": ' + "[" * 200_000 + "]" * 200_000 + "}",
     '["/a.png"]', '{"paths": [1, 2]}', '{"paths": [""]}', '{"paths": ["/a\\u0000b.png"]}',
     '{"paths": ["/' + "a" * 20_000 + '.png"]}', '{"paths": [' + ",".join(['"/a.png"'] * 10_001) + "]}",
     '{"paths": ["/a.png"], "x": "' + "y" * (5 << 20) + '"}', "\xff\xfe"],
    ids=["a-string", "nested", "nested-paths", "a-list", "numbers", "empty", "nul", "too-long-path",
         "too-many-paths", "too-big", "not-ascii"],
)  # fmt: skip
def test_a_message_that_is_not_a_list_of_paths_is_ignored(message):
    assert si.parse_message(message.encode("latin-1")) is None  # no exception either


def test_messages_within_the_limits_are_read():
    ok = ['{"paths": []}', '{"paths": ["/a.png", "file:///b.png"], "other": 1}',
          '{"paths": [' + ",".join(['"/' + "a" * 4000 + '.png"'] * 100) + "]}",
          '{"paths": [' + ",".join(['"/a.png"'] * 10_000) + "]}"]  # fmt: skip
    assert [len(si.parse_message(m.encode())) for m in ok] == [0, 2, 100, 10_000]
    assert si.parse_message(b'{"paths": ["/caf\\udce9.png"]}') == [
        "/caf\udce9.png"
    ]  # a name that is not UTF-8


@pytest.mark.parametrize("message", ['{"paths": "/etc/passwd"}', "[" * 200_000 + "]" * 200_000])
def test_a_bad_message_is_answered_error_and_the_server_keeps_serving(qtbot, tmp_path, message):
    server = si.SingleInstance(_name())
    assert server.listen()
    seen = []
    server.pathsReceived.connect(seen.append)
    (tmp_path / "message").write_text(message)
    proc = _client(FILE_CLIENT, server.name, str(tmp_path / "message"))
    qtbot.waitUntil(lambda: proc.poll() is not None, timeout=30000)
    assert proc.communicate()[0].strip() == "error" and seen == []
    with qtbot.waitSignal(server.pathsReceived, timeout=30000) as got:
        proc = _client(CLIENT, server.name, "/tmp/ok.png")
    assert proc.communicate(timeout=30)[0].strip() == "True" and got.args[0] == ["/tmp/ok.png"]
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
