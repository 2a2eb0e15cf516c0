"""One window per user: "Open with" while the app runs sends the images to that window.

The first copy listens on a local socket (``QLocalServer``: a Unix socket, a named pipe
on Windows) named per user.  A later copy connects (``QLocalSocket``), sends one line of
JSON ``{"paths": [...]}`` with the paths made absolute, waits for ``ok`` and exits; the
first copy opens the images and comes to the front.  A copy started with no images just
brings the running window forward.

Where the socket lives: ``$XDG_RUNTIME_DIR`` (private to the user) when there is one,
otherwise Qt's temporary folder under a name derived from the user; the socket only admits
its owner.  A socket left behind by a crash is noticed (nobody answers) and replaced.

On macOS the system itself keeps one copy of an app and delivers "Open with" as an open
event to it; ``connect_window`` turns those (``QFileOpenEvent``) into ``add_paths`` too.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence

from PySide6.QtCore import QByteArray, QCoreApplication, QEvent, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from ..logs import get_logger

log = get_logger("single_instance")

ENV_SWITCH = "VIT_DESKTOP_SINGLE_INSTANCE"  # "0": every start opens its own window
ENV_NAME = "VIT_DESKTOP_INSTANCE_NAME"  # a different socket name (tests run side by side)
MAX_MESSAGE = 4 << 20  # bytes; far more than any list of paths a file manager sends
TIMEOUT_MS = 5000  # for the running copy's answer; its GUI thread may be busy drawing for a moment


def enabled(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(ENV_SWITCH, "1").strip().lower() not in ("0", "no", "false", "off")


def server_name(env: dict[str, str] | None = None) -> str:
    """The socket name for this user (a full path where the user has a private folder)."""
    env = dict(os.environ if env is None else env)
    if env.get(ENV_NAME):
        return env[ENV_NAME]
    runtime = env.get("XDG_RUNTIME_DIR")
    if sys.platform.startswith("linux") and runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "vit-desktop.sock")
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container, a service): the home folder still differs
        user = os.path.expanduser("~")
    digest = hashlib.sha256(f"{user}\0{os.path.expanduser('~')}".encode()).hexdigest()[:16]
    return f"vit-desktop-{digest}"


def _absolute(paths: Sequence[str]) -> list[str]:
    """Paths as the running copy must see them (it has another working folder); URLs as given."""
    return [p if "://" in p else os.path.abspath(p) for p in paths]


def send_to_running(paths: Sequence[str], name: str | None = None, timeout_ms: int = TIMEOUT_MS) -> bool:
    """True when a running copy took the paths (and came to the front); False when none answered."""
    sock = QLocalSocket()
    sock.connectToServer(name or server_name())
    if not sock.waitForConnected(min(timeout_ms, 1000)):  # a listening socket accepts at once
        return False
    payload = json.dumps({"paths": _absolute(paths)}).encode("ascii") + b"\n"
    sock.write(QByteArray(payload))
    reply = b""
    if sock.waitForBytesWritten(timeout_ms):
        while b"\n" not in reply and sock.waitForReadyRead(timeout_ms):
            reply += bytes(sock.readAll().data())
    sock.disconnectFromServer()
    if reply.strip() != b"ok":
        log.warning("the running copy did not confirm (%r); opening a window here", reply[:40])
        return False
    return True


class SingleInstance(QObject):
    """The first copy's side: listens and emits ``pathsReceived`` for each later start."""

    pathsReceived = Signal(list)

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name or server_name()
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._on_connection)
        self._buffers: dict[QLocalSocket, bytes] = {}

    def listen(self) -> bool:
        """Start listening.  False when another copy already answers on the name (it keeps it).

        Asked first: with ``UserAccessOption`` Qt binds in a private folder and renames the
        socket into place, replacing any file of that name, live or not."""
        if _answers(self.name):
            return False
        QLocalServer.removeServer(self.name)  # a socket file left by a copy that crashed
        if self.server.listen(self.name):
            return True
        log.warning("single instance: cannot listen on %s: %s", self.name, self.server.errorString())
        return False

    def is_listening(self) -> bool:
        return self.server.isListening()

    def close(self) -> None:
        """Stop listening (removes the socket file on Unix) and drop open connections.  Their
        signals are disconnected first: a socket destroyed later must not call back into
        Python objects that are gone."""
        self.server.close()
        for sock in list(self._buffers):
            self._forget(sock)

    def _on_connection(self) -> None:
        while self.server.hasPendingConnections():
            sock = self.server.nextPendingConnection()
            self._buffers[sock] = b""
            sock.readyRead.connect(lambda s=sock: self._on_ready(s))
            sock.disconnected.connect(lambda s=sock: self._forget(s))

    def _forget(self, sock: QLocalSocket) -> None:
        if self._buffers.pop(sock, None) is None:
            return
        sock.readyRead.disconnect()
        sock.disconnected.disconnect()
        sock.abort()
        sock.deleteLater()

    def _on_ready(self, sock: QLocalSocket) -> None:
        if sock not in self._buffers:
            return
        data = self._buffers[sock] + bytes(sock.readAll().data())
        if b"\n" not in data:
            if len(data) > MAX_MESSAGE:
                log.warning("single instance: message too long; dropped")
                self._forget(sock)
            else:
                self._buffers[sock] = data
            return
        self._buffers[sock] = b""
        line = data.split(b"\n", 1)[0]
        try:
            message = json.loads(line.decode("ascii"))
            paths = [str(p) for p in message["paths"]]
        except (ValueError, KeyError, TypeError):
            log.warning("single instance: unreadable message %r", line[:80])
            sock.write(QByteArray(b"error\n"))
            sock.flush()
            return
        sock.write(QByteArray(b"ok\n"))
        sock.flush()
        log.info("single instance: %d path(s) from another start", len(paths))
        self.pathsReceived.emit(paths)


def _answers(name: str) -> bool:
    probe = QLocalSocket()
    probe.connectToServer(name)
    alive = probe.waitForConnected(500)
    probe.abort()
    return alive


def claim(images: Sequence[str], forward: bool = True, name: str | None = None) -> SingleInstance | None:
    """Called before the window is built.  None: a running copy took ``images`` (exit now).
    Otherwise the listening server for this copy (or one that is not listening, when another
    copy started at the same moment and holds the name)."""
    if forward and send_to_running(images, name):
        return None
    instance = SingleInstance(name)
    instance.listen()
    return instance


def bring_to_front(win) -> None:
    if win.isMinimized():
        win.showNormal()
    win.show()
    win.raise_()
    win.activateWindow()


class _FileOpenFilter(QObject):
    def __init__(self, receive: Callable[[list[str]], None], parent: QObject) -> None:
        super().__init__(parent)
        self._receive = receive

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.FileOpen:
            path = event.file() or event.url().toString()
            if path:
                self._receive([path])
                return True
        return False


def connect_window(win, instance: SingleInstance | None) -> None:
    """Paths from later starts (and macOS open events) go to ``win``, which comes forward."""

    def receive(paths: list[str]) -> None:
        if paths:
            win.add_paths(paths)
        bring_to_front(win)

    app = QCoreApplication.instance()
    if app is not None and (sys.platform == "darwin" or os.environ.get("VIT_DESKTOP_FILE_OPEN_EVENTS")):
        # A filter on the application sees every event: installed only where open events
        # exist (and in a test that sends them).
        app.installEventFilter(_FileOpenFilter(receive, win))
    if app is not None and instance is not None:
        app.aboutToQuit.connect(instance.close)
    if instance is not None:
        instance.pathsReceived.connect(receive)
