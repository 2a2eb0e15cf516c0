"""Logging to a rotating file in the platform's log folder (never to a missing stderr)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

_LOGGER = "vit_desktop"
_configured: Path | None = None


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


def setup_logging(level: int = logging.INFO) -> Path | None:
    """Send the app's log records to ``vit-desktop.log`` (1 MB × 3, rotated)."""
    global _configured
    if _configured is not None:
        return _configured
    logger = logging.getLogger(_LOGGER)
    logger.setLevel(level)
    logger.propagate = False
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            log_file(), maxBytes=1 << 20, backupCount=3, encoding="utf-8"
        )
        _configured = log_file()
    except OSError:
        handler = logging.NullHandler()
        _configured = None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    # Python warnings, once captured (logging.captureWarnings), land in the same file.
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(handler)
    warnings_logger.propagate = False
    return _configured


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{_LOGGER}.{name}" if name else _LOGGER)


def log_exception(message: str) -> str:
    """Log the current exception with its traceback; return where the log is."""
    get_logger().exception(message)
    return str(_configured) if _configured else "the log (not writable)"
