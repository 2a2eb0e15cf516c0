"""How well a taught classifier does (File › New Classifier…'s result view): the accuracy on
images it was not taught on and how that was scored, per-class accuracy with counts, the
confusion matrix as a picture, the misclassified images as thumbnails (a click opens one in
the window), warnings and unreadable files; Save As… and Train again.

It shows a frozen :class:`.teach_worker.TeachOutcome`; nothing here runs a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.text import display, short_name
from . import plain
from .pixels import THUMB_SIDE
from .teach_worker import TeachOutcome

CELL_MAX, CELL_MIN = 60, 22  # a confusion cell's side (px)
MATRIX_SIDE = 340  # the cells' part of the picture, about, before the limits above
NAME_CHARS = 18  # longer class names are shortened on the axes
MODES = {"linear": "linear head", "multilayer": "multi-layer features", "finetune": "last block fine-tuned"}


# -- the confusion matrix as a picture --------------------------------------------------------
@dataclass(frozen=True)
class MatrixLayout:
    """Where the confusion picture puts things (logical pixels)."""

    n: int
    cell: int
    left: int  # the row names' width (true classes), the axis title included
    top: int  # the column names' height (predicted classes), the axis title included

    @property
    def size(self) -> QSize:
        return QSize(self.left + self.n * self.cell + 8, self.top + self.n * self.cell + 8)

    def cell_rect(self, row: int, col: int) -> QRect:
        return QRect(self.left + col * self.cell, self.top + row * self.cell, self.cell, self.cell)


def _axis_name(name: str) -> str:
    name = display(name)
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def matrix_layout(classes: tuple[str, ...], font: QFont) -> MatrixLayout:
    fm = QFontMetrics(font)
    n = max(1, len(classes))
    cell = max(CELL_MIN, min(CELL_MAX, MATRIX_SIDE // n))
    widest = max((fm.horizontalAdvance(_axis_name(c)) for c in classes), default=0)
    title = fm.height() + 6
    return MatrixLayout(n, cell, title + widest + 10, title + widest + 10)


def _mix(a: QColor, b: QColor, t: float) -> QColor:
    return QColor(*(round(x + (y - x) * t) for x, y in zip(a.getRgb()[:3], b.getRgb()[:3])))


LIGHT = QColor(246, 247, 249)
RIGHT_LO, RIGHT_HI = QColor(222, 235, 247), QColor(8, 69, 148)  # right answers: blues
WRONG_LO, WRONG_HI = QColor(254, 224, 210), QColor(203, 24, 29)  # wrong answers: reds


def cell_colour(count: int, row_total: int, diagonal: bool) -> QColor:
    """Blue for right answers, red for wrong ones, deeper for a larger share of the row."""
    if count <= 0 or row_total <= 0:
        return LIGHT
    t = count / row_total
    lo, hi = (RIGHT_LO, RIGHT_HI) if diagonal else (WRONG_LO, WRONG_HI)
    return _mix(lo, hi, 0.25 + 0.75 * t)


def confusion_image(
    classes: tuple[str, ...], confusion, font: QFont, text: QColor, dpr: float = 1.0
) -> QImage:
    """The confusion matrix: rows the true classes, columns the predicted ones, each cell
    coloured by its share of the row and holding its count; class names on both axes."""
    lay = matrix_layout(classes, font)
    m = np.asarray(confusion, dtype=np.int64).reshape(len(classes), len(classes))
    size = lay.size
    img = QImage(
        round(size.width() * dpr), round(size.height() * dpr), QImage.Format.Format_ARGB32_Premultiplied
    )
    img.setDevicePixelRatio(dpr)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    p.setFont(font)
    fm = QFontMetrics(font)
    n, c = lay.n, lay.cell
    grid = QRect(lay.left, lay.top, n * c, n * c)
    p.setPen(text)
    p.drawText(
        QRect(grid.left(), 0, grid.width(), fm.height() + 4), Qt.AlignmentFlag.AlignCenter, "predicted"
    )
    p.save()
    p.translate(0, grid.bottom())
    p.rotate(-90)
    p.drawText(QRect(0, 0, grid.height(), fm.height() + 4), Qt.AlignmentFlag.AlignCenter, "true class")
    p.restore()
    for i, name in enumerate(classes):
        label = _axis_name(name)
        p.drawText(QRect(0, lay.top + i * c, lay.left - 6, c),
                   Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)  # fmt: skip
        p.save()  # the column names read upwards, each under the middle of its column
        p.translate(lay.left + i * c + c / 2 + fm.ascent() / 2 - 2, lay.top - 6)
        p.rotate(-90)
        p.drawText(0, 0, label)
        p.restore()
    bold = QFont(font)
    bold.setBold(True)
    widest = str(int(m.max(initial=0)))
    while QFontMetrics(bold).horizontalAdvance(widest) > c - 6 and bold.pointSizeF() > 6:
        bold.setPointSizeF(bold.pointSizeF() - 0.5)  # a large count in a small cell
    p.setFont(bold)
    for i in range(n):
        total = int(m[i].sum())
        for j in range(n):
            r = lay.cell_rect(i, j)
            colour = cell_colour(int(m[i, j]), total, i == j)
            p.fillRect(r.adjusted(1, 1, -1, -1), colour)
            if m[i, j]:
                p.setPen(QColor("white") if colour.lightness() < 140 else QColor(30, 30, 30))
                p.drawText(r, Qt.AlignmentFlag.AlignCenter, str(int(m[i, j])))
    p.setPen(QColor(150, 150, 150))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawRect(grid.adjusted(0, 0, -1, -1))
    p.end()
    return img


def fit_rows(table: QTableWidget, most: int = 12) -> None:
    """A table as tall as its rows (at most ``most`` of them; it scrolls beyond)."""
    table.resizeRowsToContents()
    rows = sum(table.rowHeight(i) for i in range(min(most, table.rowCount())))
    table.setFixedHeight(table.horizontalHeader().height() + rows + 2 * table.frameWidth() + 2)


def _pixmap(arr: np.ndarray) -> QPixmap:
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = a.shape[:2]
    return QPixmap.fromImage(QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy())


# -- the view ---------------------------------------------------------------------------------
class TeachResult(QWidget):
    saveRequested = Signal()
    trainAgainRequested = Signal()
    imageChosen = Signal(object)  # the path of a misclassified image clicked

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.outcome: TeachOutcome | None = None
        self.picture: QImage | None = None
        self._paths: list[str] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.placeholder = QLabel("Choose a folder and press Train: how well the classifier does shows here.")
        self.placeholder.setWordWrap(True)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setEnabled(False)
        lay.addWidget(self.placeholder, 1)
        self.body = QWidget()
        lay.addWidget(self.body, 1)
        self.body.hide()
        b = QVBoxLayout(self.body)
        b.setContentsMargins(0, 0, 0, 0)
        self.headline = plain.label("")
        f = self.headline.font()
        f.setPointSizeF(f.pointSizeF() * 1.7)
        f.setBold(True)
        self.headline.setFont(f)
        self.scoring = plain.label("")
        self.scoring.setWordWrap(True)
        b.addWidget(self.headline)
        b.addWidget(self.scoring)
        row = QHBoxLayout()
        self.matrix = QLabel()
        self.matrix.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.matrix)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Class", "Images", "Scored", "Accuracy"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            head.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        side = QVBoxLayout()  # beside the picture: per-class figures, then warnings
        side.addWidget(self.table)
        self.notes_title = plain.label("")
        self.notes = QPlainTextEdit()
        self.notes.setReadOnly(True)
        self.notes.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        side.addWidget(self.notes_title)
        side.addWidget(self.notes, 1)
        side.addStretch(0)
        row.addLayout(side, 1)
        b.addLayout(row)
        self.wrong_title = plain.label("")
        b.addWidget(self.wrong_title)
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListView.ViewMode.IconMode)
        self.thumbs.setIconSize(QSize(THUMB_SIDE, THUMB_SIDE))
        self.thumbs.setGridSize(QSize(THUMB_SIDE + 40, THUMB_SIDE + 44))
        self.thumbs.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbs.setMovement(QListView.Movement.Static)
        self.thumbs.setWordWrap(True)
        self.thumbs.setMinimumHeight(THUMB_SIDE + 56)
        self.thumbs.itemClicked.connect(self._clicked)
        self.thumbs.itemActivated.connect(self._clicked)
        b.addWidget(self.thumbs, 1)
        buttons = QHBoxLayout()
        self.said = plain.label("")  # where it was saved, or why it was not (one line)
        self.said.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        buttons.addWidget(self.said, 1)
        self.save_button = QPushButton("Save As…")
        self.save_button.setToolTip(
            "Save the classifier as a .safetensors model file (a training report beside it)"
        )
        self.save_button.clicked.connect(self.saveRequested)
        self.again_button = QPushButton("Train again")
        self.again_button.setToolTip(
            "Teach again with the settings on the left (features come from the cache)"
        )
        self.again_button.clicked.connect(self.trainAgainRequested)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.again_button)
        b.addLayout(buttons)

    def set_busy(self, busy: bool) -> None:
        self.save_button.setEnabled(not busy and self.outcome is not None)
        self.again_button.setEnabled(not busy)

    def say(self, text: str, error: bool = False) -> None:
        self.said.setText(display(text))
        self.said.setToolTip(plain.tooltip(text) if text else "")
        self.said.setStyleSheet("color: #b00020;" if error else "")

    # -- showing an outcome ------------------------------------------------------------------
    def show_outcome(self, o: TeachOutcome) -> None:
        self.outcome = o
        self.placeholder.hide()
        self.body.show()
        total, scored = sum(o.counts), sum(sum(r) for r in o.confusion)
        if o.accuracy is None:
            self.headline.setText("Not scored")
        else:
            self.headline.setText(f"Accuracy {o.accuracy:.1%}")
        how = f"on {scored} images it was not taught on ({o.evaluation})" if scored else o.evaluation
        cache = (
            f"{o.extracted} images through the backbone" if o.extracted else "every feature from the cache"
        )
        self.scoring.setText(f"{how} · {len(o.classes)} classes, {total} images · {o.backbone}, "
                             f"{MODES.get(o.mode, o.mode)} · {o.seconds:.1f} s ({cache})")  # fmt: skip
        self._fill_table(o)
        self.picture = confusion_image(o.classes, o.confusion, self.font(), self.palette().windowText().color(),
                                       self.devicePixelRatioF())  # fmt: skip
        self.matrix.setPixmap(QPixmap.fromImage(self.picture))
        self._fill_thumbs(o)
        notes = list(o.warnings) + [f"left out: {short_name(p)}: {why}" for p, why in o.failures]
        self.notes_title.setText(f"Warnings ({len(notes)})" if notes else "")
        self.notes.setPlainText("\n".join(display(n) for n in notes))
        self.notes_title.setVisible(bool(notes))
        self.notes.setVisible(bool(notes))
        self.say("")
        self.set_busy(False)

    def _fill_table(self, o: TeachOutcome) -> None:
        self.table.setRowCount(len(o.classes))
        for i, name in enumerate(o.classes):
            acc = o.per_class[i]
            cells = (plain.shown(name), str(o.counts[i]), str(sum(o.confusion[i])) if o.confusion else "0",
                     "—" if acc is None else f"{acc:.0%}")  # fmt: skip
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, col, item)
        fit_rows(self.table)

    def _fill_thumbs(self, o: TeachOutcome) -> None:
        self.thumbs.clear()
        self._paths = []
        for w in o.misclassified:
            item = QListWidgetItem(
                f"{plain.shown(w.true, 24)} → {plain.shown(w.predicted, 24)}\n{w.confidence:.0%}"
            )
            if w.thumb is not None:
                item.setIcon(QIcon(_pixmap(w.thumb)))
            item.setToolTip(plain.tooltip(f"{w.path}\nA {w.true} taken for a {w.predicted} "
                                          f"({w.confidence:.0%} sure). Click to open it in the window."))  # fmt: skip
            item.setData(Qt.ItemDataRole.UserRole, len(self._paths))
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            self._paths.append(w.path)
            self.thumbs.addItem(item)
        shown, total = len(o.misclassified), o.wrong_total
        if not total:
            title = "No scored image was misclassified"
        elif shown < total:
            title = f"Misclassified: {total} (the first {shown} shown; click one to open it)"
        else:
            title = f"Misclassified: {total} (click one to open it in the window)"
        self.wrong_title.setText(title)
        self.thumbs.setVisible(bool(total))

    def _clicked(self, item: QListWidgetItem) -> None:
        index = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(index, int) and 0 <= index < len(self._paths):
            self.imageChosen.emit(self._paths[index])

    def thumbnail_count(self) -> int:
        return self.thumbs.count()


def suggested_name(o: TeachOutcome | None) -> str:
    """A file name for Save As…: the folder's name."""
    if o is None:
        return "classifier.safetensors"
    base = os.path.basename(os.path.normpath(o.request.folder)) or "classifier"
    return f"{base}.safetensors"
