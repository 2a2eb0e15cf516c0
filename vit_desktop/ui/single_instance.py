"""One window per user: "Open with" while the app runs sends the images to that window.

The first copy listens on a local socket (``QLocalServer``: a Unix socket, a named pipe
on Windows) named per user.  A later copy connects (``QLocalSocket``), sends one line of
JSON ``{"paths": [...]}`` with the paths made absolute, waits for ``ok`` and exits; the
first copy opens the images and comes to the front.  A copy started with no images just
brings the running window forward.

Where the socket lives: ``$XDG_RUNTIME_DIR`` (private to the user) when there is one,
otherwise a folder ``vit-desktop-UID`` made in the temporary folder with mode 0700 — refused
(every start then opens its own window) when it exists and is not this user's, or not 0700.
On Windows it is a named pipe named per user.  The socket only admits its owner, and before
a later copy sends anything it checks that the copy answering runs as the same user
(``SO_PEERCRED`` on Linux; the socket file's owner elsewhere): a name another user took
first gets no paths.  A socket left behind by a crash is noticed (nobody answers) and
replaced.

The running copy reads at most :data:`MAX_MESSAGE` bytes and accepts only a JSON object whose
``"paths"`` is a list of at most :data:`MAX_PATHS` strings of sensible length; anything else
is answered ``error`` and logged.

On macOS the system itself keeps one copy of an app and delivers "Open with" as an open
event to it; ``connect_window`` turns those (``QFileOpenEvent``) into ``add_paths`` too.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Sequence

from PySide6.QtCore import QByteArray, QCoreApplication, QEvent, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from ..logs import get_logger

log = get_logger("single_instance")

ENV_SWITCH = "VIT_DESKTOP_SINGLE_INSTANCE"  # "0": every start opens its own window
ENV_NAME = "VIT_DESKTOP_INSTANCE_NAME"  # a different socket name (tests run side by side)
MAX_MESSAGE = 4 << 20  # bytes; far more than any list of paths a file manager sends
MAX_PATHS = 10_000
MAX_PATH_CHARS = 16_384  # a 4096-byte path written as a file:// URL with %XX escapes fits
TIMEOUT_MS = 5000  # for the running copy's answer; its GUI thread may be busy drawing for a moment


def enabled(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(ENV_SWITCH, "1").strip().lower() not in ("0", "no", "false", "off")


def server_name(env: dict[str, str] | None = None) -> str | None:
    """The socket name for this user: a full path in a folder private to the user (a pipe
    name on Windows); None when no private folder can be had."""
    env = dict(os.environ if env is None else env)
    if env.get(ENV_NAME):
        return env[ENV_NAME]
    if sys.platform == "win32":
        try:
            user = getpass.getuser()
        except Exception:  # no login name (a service): the home folder still differs
            user = os.path.expanduser("~")
        digest = hashlib.sha256(f"{user}\0{os.path.expanduser('~')}".encode()).hexdigest()[:16]
        return f"vit-desktop-{digest}"
    runtime = env.get("XDG_RUNTIME_DIR")
    if sys.platform.startswith("linux") and runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "vit-desktop.sock")
    folder = private_folder(env.get("TMPDIR") or tempfile.gettempdir())
    return os.path.join(folder, "vit-desktop.sock") if folder else None


def private_folder(base: str) -> str | None:
    """``BASE/vit-desktop-UID``, made with mode 0700; None (and a log line) when it cannot be
    made, or exists and is not a folder of this user with mode 0700 (a link, another user's
    folder, one others can enter): someone else could then see or take the socket."""
    uid = os.getuid()
    path = os.path.join(base, f"vit-desktop-{uid}")
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # the umask may have taken bits away
    except FileExistsError:
        pass
    except OSError as exc:
        log.warning("single instance: cannot make %s (%s); this window stays on its own", path, exc)
        return None
    try:
        st = os.lstat(path)
    except OSError as exc:
        log.warning("single instance: cannot check %s (%s); this window stays on its own", path, exc)
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or stat.S_IMODE(st.st_mode) != 0o700:
        log.warning("single instance: %s is not a private folder of this user (owner %d, mode %o); "
                    "this window stays on its own", path, st.st_uid, st.st_mode)  # fmt: skip
        return None
    return path


def _peer_uid(sock: QLocalSocket) -> int | None:
    """The user id of the process at the other end of a connected local socket, if known."""
    fd = int(sock.socketDescriptor())
    if sys.platform.startswith("linux") and fd >= 0:
        try:
            with socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM) as dup:  # a copy: Qt keeps fd
                creds = dup.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return struct.unpack("3i", creds)[1]
        except OSError as exc:
            log.warning("single instance: cannot ask who answers (%s)", exc)
            return None
    try:  # elsewhere: who owns the socket file
        st = os.stat(sock.fullServerName())
    except OSError:
        return None
    return st.st_uid if stat.S_ISSOCK(st.st_mode) else None


def _is_ours(sock: QLocalSocket) -> bool:
    """Whether the copy that answered runs as this user (always true for Windows' pipes,
    whose access Qt limits to the user)."""
    if sys.platform == "win32":
        return True
    uid = _peer_uid(sock)
    if uid == os.getuid():
        return True
    log.warning("single instance: %s answers as user %s, not as this user; nothing sent, opening a "
                "window here", sock.fullServerName(), uid)  # fmt: skip
    return False


def _absolute(paths: Sequence[str]) -> list[str]:
    """Paths as the running copy must see them (it has another working folder); URLs as given."""
    return [p if "://" in p else os.path.abspath(p) for p in paths]


def send_to_running(paths: Sequence[str], name: str | None = None, timeout_ms: int = TIMEOUT_MS) -> bool:
    """True when a running copy of this user took the paths (and came to the front); False
    when none answered, or the one that answered is not this user's (it gets nothing)."""
    name = name or server_name()
    if not name:
        return False
    sock = QLocalSocket()
    sock.connectToServer(name)
    if not sock.waitForConnected(min(timeout_ms, 1000)):  # a listening socket accepts at once
        return False
    if not _is_ours(sock):
        sock.abort()
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
        self.name = (server_name() or "") if name is None else name  # "": no private place; never listens
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._on_connection)
        self._buffers: dict[QLocalSocket, bytes] = {}

    def listen(self) -> bool:
        """Start listening.  False when another copy already answers on the name (it keeps it).

        Asked first: with ``UserAccessOption`` Qt binds in a private folder and renames the
        socket into place, replacing any file of that name, live or not."""
        if not self.name or _answers(self.name):
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
        paths = parse_message(line)
        if paths is None:
            sock.write(QByteArray(b"error\n"))
            sock.flush()
            return
        sock.write(QByteArray(b"ok\n"))
        sock.flush()
        log.info("single instance: %d path(s) from another start", len(paths))
        self.pathsReceived.emit(paths)


def parse_message(line: bytes) -> list[str] | None:
    """The paths of one message, or None (and a log line) for anything but a JSON object whose
    ``"paths"`` is a list of at most :data:`MAX_PATHS` non-empty strings of at most
    :data:`MAX_PATH_CHARS` characters without NUL."""
    try:
        return _paths_of(line)
    except ValueError as exc:
        log.warning("single instance: message ignored (%s): %r", exc, line[:80])
        return None


def _paths_of(line: bytes) -> list[str]:
    if len(line) > MAX_MESSAGE:
        raise ValueError(f"{len(line)} bytes")
    try:
        message = json.loads(line.decode("ascii"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise ValueError(f"not JSON: {type(exc).__name__}") from None
    paths = message.get("paths") if isinstance(message, dict) else None
    if not isinstance(paths, list):
        raise ValueError('"paths" is not a list')
    if len(paths) > MAX_PATHS:
        raise ValueError(f"{len(paths)} paths, at most {MAX_PATHS}")
    if not all(isinstance(p, str) and 0 < len(p) <= MAX_PATH_CHARS and "\0" not in p for p in paths):
        raise ValueError("a path that is not a sensible string")
    return list(paths)


def _answers(name: str) -> bool:
    probe = QLocalSocket()
    probe.connectToServer(name)
    alive = probe.waitForConnected(500)
    probe.abort()
    return alive


def claim(images: Sequence[str], forward: bool = True, name: str | None = None) -> SingleInstance | None:
    """Called before the window is built.  None: a running copy took ``images`` (exit now).
    Otherwise the listening server for this copy (or one that is not listening: another copy
    started at the same moment and holds the name, another user's program holds it, or there
    is no private folder for it)."""
    name = (server_name() or "") if name is None else name
    if forward and name and send_to_running(images, name):
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
