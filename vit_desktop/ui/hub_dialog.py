"""Model › Open from Hugging Face…: asks for a model on the Hub (``ORG/NAME``, optionally
``@REVISION``; a pasted Hub address works too) and hands back ``hf:ORG/NAME[@REVISION]``."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QLineEdit, QVBoxLayout

from ..core import hub
from ..core.errors import VitDesktopError

EXAMPLE = "facebook/deit-tiny-patch16-224"
HINT = (
    f"For example {EXAMPLE}. Only its config and safetensors weights are downloaded, into the "
    "Hugging Face cache (HF_HOME); gated or private models need HF_TOKEN."
)
_PAGE = re.compile(
    r"(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/([^/?#]+/[^/?#]+)(?:/(?:tree|blob)/([^/?#]+))?"
)


def model_name(text: str) -> str:
    """What a person typed or pasted, as ``hf:ORG/NAME[@REVISION]`` (not yet checked)."""
    text = text.strip()
    page = _PAGE.match(text)
    if page:
        text = page.group(1) + (f"@{page.group(2)}" if page.group(2) else "")
    return text if hub.is_hub_id(text) else hub.PREFIX + text


class HubDialog(QDialog):
    chosen = Signal(str)  # hf:ORG/NAME[@REVISION]

    def __init__(self, parent=None, last: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Open from Hugging Face")
        self.field = QLineEdit(last.removeprefix(hub.PREFIX))
        self.field.setPlaceholderText(EXAMPLE)
        self.field.setClearButtonEnabled(True)
        self.field.setMinimumWidth(420)
        self.field.selectAll()  # typing replaces the last model
        ask = QLabel("Model on the Hugging Face Hub (ORG/NAME, or ORG/NAME@REVISION):")
        hint = QLabel(HINT)
        self.problem = QLabel()
        for label in (ask, hint, self.problem):
            label.setTextFormat(Qt.TextFormat.PlainText)  # typed text is never markup
            label.setWordWrap(True)
        hint.setEnabled(False)  # the platform's quieter text colour
        self.problem.hide()
        ask.setBuddy(self.field)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for w in (ask, self.field, hint, self.problem, self.buttons):
            layout.addWidget(w)
        self.field.textChanged.connect(self._changed)
        self._changed(self.field.text())

    @property
    def open_button(self):
        return self.buttons.button(QDialogButtonBox.StandardButton.Open)

    def _changed(self, text: str) -> None:
        self.problem.hide()
        self.open_button.setEnabled(bool(text.strip()))

    def accept(self) -> None:
        try:
            ref = hub.parse(model_name(self.field.text()))
        except VitDesktopError as exc:
            self.problem.setText(exc.one_line())
            self.problem.show()
            return
        super().accept()
        self.chosen.emit(ref.text)
