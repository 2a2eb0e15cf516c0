"""Text for people: an exception as one line, a file name that stays on one line.

The window, the command line, the self-test and the core's own error messages all use these,
so a name with a newline or with bytes that are not UTF-8 reads the same everywhere.
"""

from __future__ import annotations

import os


def display(text: str) -> str:
    """``text`` on one line, nothing hidden: control characters (a newline in a file name)
    shown as escapes (``\\n``), bytes that are not UTF-8 as ``\\xNN``."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(c.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def short_name(path: str | os.PathLike[str], limit: int = 80) -> str:
    """A file's name for a message: its base name, one line, at most ``limit`` characters."""
    path = os.fspath(path)
    name = display(os.path.basename(path) or path)
    if len(name) <= limit:
        return name
    half = (limit - 4) // 2
    return name[:half] + "…" + name[-half:]


def json_safe(text: str) -> str:
    """A string that JSON and UTF-8 files can hold: bytes of a file name that are not UTF-8
    (kept by Python as surrogate escapes) become ``\\xNN`` escapes — the same as on screen —
    instead of making the writer raise; any other lone surrogate becomes ``\\uXXXX``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def brief(text: str, limit: int = 160) -> str:
    """Whitespace collapsed to single spaces, cut at ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """The one line a person sees for an exception: our own errors say what happened in
    their own words; anything else is named by its type."""
    from .errors import VitDesktopError

    if isinstance(exc, VitDesktopError):
        line = " ".join(str(exc).split())
    else:
        reason = " ".join(str(exc).split())
        line = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return brief(line, limit) if limit else line
