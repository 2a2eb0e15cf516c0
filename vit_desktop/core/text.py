"""Text for people: an exception as one line, a file name that stays on one line.

The window, the command line, the self-test and the core's own error messages all use these,
so a name with a newline or with bytes that are not UTF-8 reads the same everywhere.
"""

from __future__ import annotations

import os
import re


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
    """A string that JSON and UTF-8 files can hold: a lone surrogate (a byte of a file name
    that is not UTF-8, kept by Python as a surrogate escape) becomes a ``\\udcNN`` escape
    instead of making the writer raise — the form the command line has always written."""
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


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_URL_PARAM = re.compile(r"([?&#;])([^=&#;]*)=([^&#;]*)")
#: Query or fragment parameters whose values are secrets (matched inside the name, any case).
_SECRET_PARAM = re.compile(
    r"token|key|sig|secret|pass|pwd|auth|credential|session|cookie|jwt|^code$", re.IGNORECASE
)


def redact_urls(text: str) -> str:
    """``text`` with the credentials in every URL hidden: the user and password
    (``https://user:pass@host`` → ``https://***@host``) and the values of query or fragment
    parameters named like secrets (``?token=``, ``key``, ``sig``, ``password``, …) → ``***``."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_one_url, text)


def _redact_one_url(match: re.Match[str]) -> str:
    url = match.group(0)
    kept = url.rstrip(".,;:!?)]}")  # punctuation after a URL in a sentence is not part of it
    scheme, rest = kept.split("://", 1)
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]

    def hide(p: re.Match[str]) -> str:
        return f"{p[1]}{p[2]}=***" if p[3] and _SECRET_PARAM.search(p[2]) else p[0]

    return f"{scheme}://{authority}{_URL_PARAM.sub(hide, tail)}{url[len(kept) :]}"
