"""Logging to a private rotating file in the platform's log folder (never to a missing stderr).

* One record, one line: control characters in a message are escaped (a newline in a file or
  checkpoint name cannot forge a record) and credentials in URLs are hidden; a traceback
  follows the record, indented, so every line that starts in column 0 is a record.
* The folder is made 0700 and the files 0600 (tightened when they exist looser).
* Other libraries' loggers (Pillow, …) write to the same file, never to the terminal.
* :func:`keep_terminal_for_our_lines` (the command line) sends what C libraries write to
  file descriptor 2 (libtiff's "Fax4Decode: Bad code word …") to the log too, each line
  with the file being decoded, and keeps the terminal for the app's own lines.
"""

from __future__ import annotations

import atexit
import io
import itertools
import logging
import logging.handlers
import os
import re
import stat
import sys
import threading
from pathlib import Path

from .core.text import display, redact_urls

_LOGGER = "vit_desktop"
_configured: Path | None = None
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_BACKUPS = 3


def log_dir() -> Path:
    override = os.environ.get("VIT_DESKTOP_LOG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "ViT Desktop" / "Logs"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / "ViT Desktop"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "vit-desktop" / "log"


def ensure_std_streams() -> None:
    """A windowed process (``pythonw``, the ``vit-desktop-gui`` launcher on Windows, a frozen
    windowed build) has ``sys.stdout``/``sys.stderr`` set to None.  Point them at the null
    device so that nothing that writes there (print, progress, a library's warning, the
    interpreter's last-resort traceback) fails; what matters goes to the log file."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115


def log_file() -> Path:
    return log_dir() / "vit-desktop.log"


def _one_line(text: str) -> str:
    return display(redact_urls(text))


def _decoding_context(record: logging.LogRecord) -> str:
    """`` (while decoding NAME)`` for another library's record made while this thread
    decodes a file; our own records name their files themselves."""
    if record.name == _LOGGER or record.name.startswith(_LOGGER + "."):
        return ""
    images = sys.modules.get("vit_desktop.core.images")  # nothing is decoded before its import
    name = images.decoding_now() if images is not None else None
    return f" (while decoding {name})" if name else ""


class SafeFormatter(logging.Formatter):
    """Every record's message on one line, credentials in URLs hidden; a traceback or stack
    (also with URLs hidden) indented below it."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = _one_line(record.getMessage()) + _decoding_context(record)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + _indented(record.exc_text)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _indented(stack_info)


def _indented(block: str) -> str:
    return "\n".join("    " + _one_line(line) for line in block.splitlines())


def _tighten(path: Path, mode: int) -> None:
    """Take away the permissions ``path`` has beyond ``mode`` (POSIX; only for a file or
    folder of ours: never a shared, sticky folder like /tmp)."""
    if os.name != "posix":
        return
    info = os.lstat(path)
    if info.st_uid != os.geteuid() or stat.S_ISLNK(info.st_mode) or info.st_mode & stat.S_ISVTX:
        return
    current = stat.S_IMODE(info.st_mode)
    if current & ~mode:
        os.chmod(path, current & mode)


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


class _PrivateFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created 0600 (also the fresh one after a rollover)."""

    def _open(self):
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,  # noqa: SIM115
                    opener=_private_opener)  # fmt: skip


def _file_handler() -> logging.Handler:
    folder = log_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(folder, 0o700)
    path = log_file()
    for p in [path, *(Path(f"{path}.{i}") for i in range(1, _BACKUPS + 1))]:
        if p.exists():
            _tighten(p, 0o600)
    return _PrivateFileHandler(path, maxBytes=1 << 20, backupCount=_BACKUPS, encoding="utf-8",
                               errors="backslashreplace")  # fmt: skip


def setup_logging(level: int = logging.INFO) -> Path | None:
    """Send the app's log records — and other libraries' warnings and errors — to
    ``vit-desktop.log`` (1 MB × 3, rotated; folder 0700, files 0600)."""
    global _configured
    if _configured is not None:
        return _configured
    logger = logging.getLogger(_LOGGER)
    logger.setLevel(level)
    logger.propagate = False
    try:
        handler = _file_handler()
        _configured = log_file()
    except OSError:
        handler = logging.NullHandler()
        _configured = None
    handler.setFormatter(SafeFormatter(_FORMAT))
    logger.addHandler(handler)
    # Python warnings, once captured (logging.captureWarnings), land in the same file.
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(handler)
    warnings_logger.propagate = False
    # Other libraries' loggers (Pillow's "More samples per pixel than can be decoded") reach
    # the root: with a handler there, Python's last resort never prints them on stderr.
    logging.getLogger().addHandler(handler)
    return _configured


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{_LOGGER}.{name}" if name else _LOGGER)


def log_exception(message: str) -> str:
    """Log the current exception with its traceback; return where the log is."""
    get_logger().exception(message)
    return str(_configured) if _configured else "the log (not writable)"


# -- file descriptor 2: the terminal for our lines, the log for the C libraries' ----------------

_MARK = re.compile(rb"\x00VD([+-])(\d+)$")  # written around each decode, one line each
_LINES_PER_DECODE = 20  # more lines than this from one file's decode are counted, not logged
_router: _Fd2Router | None = None
_router_lock = threading.Lock()


class _Fd2Router:
    """Drains the pipe that file descriptor 2 now points at into the log.  Each decode writes
    a begin and an end mark into the same pipe, so the lines between them are known to come
    from while that file (or another being decoded at the same time) was decoded."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.lock = threading.Lock()  # writers of marks; the drain thread never takes it
        self.tokens = itertools.count(1)
        self.names: dict[int, str] = {}
        self.per_thread = threading.local()
        self.log = get_logger("stderr")
        self.active: dict[int, str] = {}  # drain thread only, from here on
        self.line_ctx: dict[int, str] = {}
        self.carry = b""
        self.logged: dict[int, int] = {}
        self.hidden: dict[int, int] = {}
        self.thread = threading.Thread(target=self._drain, name="vit-desktop-stderr", daemon=True)

    def decode_event(self, name: str, started: bool) -> None:
        """A hook for ``core.images.watch_decodes``: runs on the decoding thread."""
        stack = self.per_thread.__dict__.setdefault("tokens", [])
        with self.lock:
            if self.write_fd is None:
                return
            if started:
                token = next(self.tokens)
                self.names[token] = name
                stack.append(token)
                os.write(self.write_fd, b"\x00VD+%d\n" % token)
            elif stack:
                os.write(self.write_fd, b"\x00VD-%d\n" % stack.pop())

    def _drain(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut:
                self._lines(pending[: cut - 1].split(b"\n"))
                pending = pending[cut:]
        self._lines([pending] if pending else [])
        if self.carry:
            self._lines([b""])
        os.close(self.read_fd)

    def _lines(self, segments: list[bytes]) -> None:
        for seg in segments:
            try:
                self._segment(seg)
            except Exception:  # noqa: BLE001, S110 - the drain must go on, or fd 2 would block
                pass

    def _segment(self, seg: bytes) -> None:
        mark = _MARK.search(seg)
        if mark is None:  # a whole line (with what other threads' marks interrupted)
            line, self.carry = self.carry + seg, b""
            self._emit(line.decode("utf-8", "backslashreplace").strip(), self.line_ctx)
            self.line_ctx = dict(self.active)
            return
        self.carry += seg[: mark.start()]
        token = int(mark[2])
        if mark[1] == b"+":
            self.active[token] = self.line_ctx[token] = self.names.pop(token, "?")
            return
        name = self.active.pop(token, "?")
        if not self.carry:
            self.line_ctx = dict(self.active)
        hidden = self.hidden.pop(token, 0)
        self.logged.pop(token, None)
        if hidden:
            self.log.warning("… %d more lines like these (while decoding %s)", hidden, name)

    def _emit(self, text: str, ctx: dict[int, str]) -> None:
        if not text:
            return
        if not ctx:
            self.log.warning("%s", text)
            return
        if all(self.logged.get(t, 0) >= _LINES_PER_DECODE for t in ctx):
            for t in ctx:
                self.hidden[t] = self.hidden.get(t, 0) + 1
            return
        for t in ctx:
            self.logged[t] = self.logged.get(t, 0) + 1
        self.log.warning("%s (while decoding %s)", text, " or ".join(dict.fromkeys(ctx.values())))

    def close(self) -> None:
        """At exit: stop taking marks, point fd 2 at the null device (so the pipe's last
        writer is gone), and let the drain log what is left."""
        with self.lock:
            write_fd, self.write_fd = self.write_fd, None
        if write_fd is None:
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
            os.close(write_fd)
        except OSError:
            return
        self.thread.join(timeout=2.0)


def keep_terminal_for_our_lines() -> bool:
    """Keep the terminal for the app's own lines, and send everything else that writes to
    file descriptor 2 (C libraries such as libtiff, Python's last resort) to the log file.

    ``sys.stderr`` becomes a line-buffered stream on a duplicate of the real descriptor 2;
    descriptor 2 itself becomes a pipe drained into the log by a daemon thread, each line
    tagged with the file being decoded when it was written.  Does nothing (returns False)
    when ``sys.stderr`` is None or is not descriptor 2 (a windowed build, pytest's capture);
    calling it again does nothing more.  Returns whether descriptor 2 is routed."""
    global _router
    with _router_lock:
        if _router is not None:
            return True
        stream = sys.stderr
        try:
            if stream is None or stream.fileno() != 2:
                return False
            os.fstat(2)
            stream.flush()
        except (AttributeError, OSError, ValueError):
            return False
        setup_logging()
        from .core.images import watch_decodes

        ours = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)  # inheritable: a child process's stderr lands in the log too
        sys.stderr = io.TextIOWrapper(
            io.FileIO(ours, "w", closefd=True),
            encoding=getattr(stream, "encoding", None) or "utf-8",
            errors=getattr(stream, "errors", None) or "backslashreplace",
            line_buffering=True,
        )
        _router = _Fd2Router(read_fd, write_fd)
        _router.thread.start()
        watch_decodes(_router.decode_event)
        atexit.register(_router.close)
        import faulthandler

        faulthandler.enable(file=ours)  # a hard crash still reaches the terminal, not a dying pipe
        return True
