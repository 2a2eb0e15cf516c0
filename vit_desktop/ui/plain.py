"""User and file text on screen is plain text, never markup: a label, a file name or a link
with HTML in it shows as typed — no bold fake host, no clickable link.  Long text is cut for
display (a 5 MB label must not freeze a panel)."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from ..core.text import display

LABEL_MAX = 120  # characters of a class label or a name shown in a panel or gallery row
TOOLTIP_MAX = 2000


def shown(text: str, limit: int = LABEL_MAX) -> str:
    """``text`` on one line (escapes for control characters), at most ``limit`` characters."""
    text = display(text if len(text) <= 4 * limit else text[: 4 * limit])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tooltip(text: str) -> str:
    """A tooltip that shows ``text`` as typed (Qt would take text that looks like HTML as
    HTML): escaped, line breaks kept, cut at TOOLTIP_MAX characters."""
    lines = [shown(line, TOOLTIP_MAX) for line in text[: 4 * TOOLTIP_MAX].split("\n")]
    return "<p style='white-space:pre-wrap'>" + "<br>".join(html.escape(line) for line in lines) + "</p>"


def label(text: str = "") -> QLabel:
    """A QLabel that never renders its text as rich text."""
    w = QLabel()
    w.setTextFormat(Qt.TextFormat.PlainText)
    w.setText(text)
    return w
