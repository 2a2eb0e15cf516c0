"""How faithful the map on screen is: its deletion and insertion curves, drawn small.

Deletion removes the patches the map ranks highest first (pixels set to the normalisation
mean) and follows the class's probability down: a faithful map makes it fall fast (a small
area).  Insertion reveals them in the same order from a blank image: a faithful map makes
it rise fast (a large area).  The same curves for a random order are drawn dashed: a map is
worth something where it beats them.  The numbers come from
:func:`vit_desktop.core.faithfulness.curves`, computed in the worker on request.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

DELETION = QColor(214, 69, 65)
INSERTION = QColor(44, 123, 182)


class FaithfulnessPlot(QWidget):
    """The probability of the class (0–1) against the fraction of patches removed or revealed."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.curves = None  # a core.faithfulness.Faithfulness, or None
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setAccessibleName("Deletion and insertion curves")

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(260, 140)

    def set_curves(self, curves) -> None:
        self.curves = curves
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        fm = p.fontMetrics()
        left, bottom = fm.horizontalAdvance("1.0") + 6, fm.height() + 4
        box = QRectF(left, 4, max(10, self.width() - left - 6), max(10, self.height() - bottom - 8))
        p.setPen(QPen(text, 1))
        p.drawRect(box)
        p.drawText(QRectF(0, box.top() - 2, left - 4, fm.height()), Qt.AlignmentFlag.AlignRight, "1.0")
        p.drawText(QRectF(0, box.bottom() - fm.height() + 2, left - 4, fm.height()), Qt.AlignmentFlag.AlignRight,
                   "0")  # fmt: skip
        p.drawText(QRectF(box.left(), box.bottom() + 2, box.width(), fm.height()), Qt.AlignmentFlag.AlignCenter,
                   "fraction of patches removed / revealed")  # fmt: skip
        f = self.curves
        if f is None:
            p.drawText(box, Qt.AlignmentFlag.AlignCenter, "not scored yet")
            p.end()
            return
        x = np.asarray(f.fractions, dtype=float)
        for ys, colour, dashed in ((f.random_deletion, DELETION, True), (f.random_insertion, INSERTION, True),
                                   (f.deletion, DELETION, False), (f.insertion, INSERTION, False)):  # fmt: skip
            pen = QPen(colour, 1.2 if dashed else 2.0)
            if dashed:
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawPath(_path(box, x, np.asarray(ys, dtype=float)))
        p.end()


def _path(box: QRectF, x: np.ndarray, y: np.ndarray) -> QPainterPath:
    path = QPainterPath()
    for i, (u, v) in enumerate(zip(x, np.clip(np.nan_to_num(y), 0.0, 1.0), strict=False)):
        pt = QPointF(box.left() + u * box.width(), box.bottom() - v * box.height())
        path.moveTo(pt) if i == 0 else path.lineTo(pt)
    return path


def describe(f) -> str:
    """The four areas in words (plain text)."""
    return (f"Deletion AUC {f.deletion_auc:.3f} (random {f.random_deletion_auc:.3f}): lower is better\n"
            f"Insertion AUC {f.insertion_auc:.3f} (random {f.random_insertion_auc:.3f}): higher is better")  # fmt: skip


class FaithfulnessBox(QWidget):
    """The map on screen's score: a "Score this map" button, the plot and the four areas."""

    scoreRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 6, 0, 0)
        title = QLabel("Faithfulness of this map")
        title.setToolTip("Deletion: the class's probability as the map's top patches are removed (solid red; "
                         "dashed: a random order). Insertion: as they are revealed (blue).")  # fmt: skip
        self.button = QPushButton("Score this map")
        self.button.setToolTip("Run the model on the image with patches removed and revealed in the map's order "
                               "(about 40 forward passes)")  # fmt: skip
        self.button.clicked.connect(self.scoreRequested)
        self.plot = FaithfulnessPlot()
        self.numbers = QLabel()
        self.numbers.setTextFormat(Qt.TextFormat.PlainText)
        self.numbers.setWordWrap(True)
        for w in (title, self.button, self.plot, self.numbers):
            lay.addWidget(w)
        self.show_score(None, can_score=False)

    def show_score(self, f, can_score: bool, note: str = "") -> None:
        """The curves of the map on screen (None: not scored), whether it can be scored now,
        and a line for when it is being scored or failed."""
        self.plot.set_curves(f)
        self.numbers.setText(describe(f) if f is not None else note)
        self.button.setEnabled(can_score and f is None)
