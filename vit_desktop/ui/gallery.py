"""The gallery: one square thumbnail per image with its top class and confidence.

Rows carry their index in the session (Qt strings cannot hold every file name), so a key
never passes through Qt."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem

from . import plain, render
from .pixels import THUMB_SIDE as THUMB
from .session import Item


class Gallery(QListWidget):
    rowShown = Signal(int)  # the current row changed (the session's row index)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setViewMode(QListWidget.ViewMode.IconMode)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.setMovement(QListWidget.Movement.Static)
        self.setWordWrap(True)
        self.setGridSize(QSize(THUMB + 40, THUMB + 44))
        self.setUniformItemSizes(True)
        self.setMinimumHeight(THUMB + 56)  # one row of thumbnails with their labels
        self.setAccessibleName("Gallery")
        blank = QPixmap(THUMB, THUMB)
        blank.fill(Qt.GlobalColor.transparent)
        self._blank = QIcon(blank)  # keeps the grid aligned until the thumbnail arrives
        self.currentItemChanged.connect(self._on_current)

    def add(self, item: Item) -> None:
        row = QListWidgetItem(self._blank, item.label)
        row.setData(Qt.ItemDataRole.UserRole, item.row)
        row.setToolTip(plain.tooltip(str(item.key)))
        self.addItem(row)

    def row_item(self, item: Item) -> QListWidgetItem:
        return self.item(item.row)

    def select(self, item: Item) -> None:
        self.setCurrentItem(self.row_item(item))

    def step(self, step: int) -> None:
        row = self.currentRow() + step
        if 0 <= row < self.count():
            self.setCurrentRow(row)

    def _on_current(self, cur: QListWidgetItem | None, prev) -> None:
        if cur is not None:
            self.rowShown.emit(cur.data(Qt.ItemDataRole.UserRole))

    # -- what a row says ---------------------------------------------------------------------
    def pending(self, item: Item) -> None:
        self.row_item(item).setText(f"{item.label}\n…")

    def not_classified(self, item: Item) -> None:
        self.row_item(item).setText(f"{item.label}\n(not classified)")

    def error(self, item: Item) -> None:
        row = self.row_item(item)
        row.setText(f"{item.label}\n⚠ error")
        row.setToolTip(plain.tooltip(item.error or ""))

    def result(self, item: Item, thumb: np.ndarray | None) -> None:
        row = self.row_item(item)
        top = item.result.top1
        row.setText(f"{item.label}\n{plain.shown(top.label, 40)} {top.prob * 100:.0f}%")
        row.setToolTip(plain.tooltip(f"{item.key}\n{top.label}: {top.prob * 100:.1f}%"))
        if thumb is not None:
            row.setIcon(self._square_icon(thumb))

    @staticmethod
    def _square_icon(thumb: np.ndarray) -> QIcon:
        """The thumbnail centred on a square, so labels line up under every image."""
        img = render.rgb_to_qimage(thumb)
        pix = QPixmap(THUMB, THUMB)
        pix.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pix)
        painter.drawImage((THUMB - img.width()) // 2, (THUMB - img.height()) // 2, img)
        painter.end()
        return QIcon(pix)
