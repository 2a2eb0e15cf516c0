"""The searchable class picker: every label of the model, found by typing any part of it.

An editable combo box whose completer matches anywhere in a label, case-insensitively
("cat" finds "tabby cat" and "Egyptian cat"); choosing one (from the list, the completer or
by typing a whole label and Enter) emits :attr:`ClassPicker.chosen` with the class index.
Labels are shown as plain one-line text.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QCompleter

from . import plain


class ClassPicker(QComboBox):
    chosen = Signal(int)  # a class index

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.setMaxVisibleItems(15)
        self.setAccessibleName("Class to explain")
        self.setToolTip("The class the class-specific maps explain: type any part of a label")
        self.lineEdit().setPlaceholderText("Type a class…")
        completer = QCompleter(self.model(), self)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        completer.setMaxVisibleItems(15)
        self.setCompleter(completer)
        self._names: tuple[str, ...] = ()
        self.activated.connect(self._on_activated)

    def set_labels(self, names: tuple[str, ...]) -> None:
        """One entry per class (the model's labels, "class N" past them)."""
        if names == self._names:
            return
        self._names = names
        self.blockSignals(True)
        self.clear()
        self.addItems([plain.shown(name) for name in names])  # row = class index; one call, not 1000
        self.setCurrentIndex(-1)
        self.blockSignals(False)

    def show_target(self, index: int | None) -> None:
        """Show ``index`` as the chosen class without emitting ``chosen``."""
        self.blockSignals(True)
        self.setCurrentIndex(index if index is not None and 0 <= index < self.count() else -1)
        self.blockSignals(False)

    def _on_activated(self, row: int) -> None:
        if 0 <= row < self.count():
            self.chosen.emit(row)
