"""Model › Input Size: run the current model at another input size (its position embeddings
resampled by the core), or back at the size it was trained at.  The model is loaded again at
the new size, so every image on screen is classified again, as after a model switch."""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QInputDialog, QMenu

from ..core.preprocess import parse_input_size

#: Sizes offered, as multiples of the trained size (rounded to whole patches).
FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def _label(size: tuple[int, int]) -> str:
    h, w = size
    return f"{w} px" if h == w else f"{w}×{h} px"


class InputSizeMenu(QObject):
    def __init__(self, control) -> None:
        super().__init__(control)
        self.control = control
        self.menu = QMenu("Input &Size", control.win)
        self.menu.setToolTipsVisible(True)
        self.shape: tuple[int, tuple[int, int], tuple[int, int]] | None = None  # patch, trained, now
        self._group = QActionGroup(self)
        control.win.worker.worker.modelShape.connect(self._on_shape)
        self._fill()

    def attach(self, model_menu: QMenu) -> None:
        model_menu.addMenu(self.menu)

    def _on_shape(self, gen: int, patch: int, trained: tuple[int, int], now: tuple[int, int]) -> None:
        if gen != self.control.win.session.model_generation:
            return
        self.shape = (int(patch), tuple(trained), tuple(now))
        self._fill()

    def sizes(self) -> list[tuple[int, int]]:
        """The sizes offered for the current model: whole patches, the trained size among them."""
        if self.shape is None:
            return []
        patch, (th, tw), now = self.shape
        out = {(th, tw), now}
        for f in FACTORS:
            h, w = max(1, round(th * f / patch)) * patch, max(1, round(tw * f / patch)) * patch
            out.add((h, w))
        return sorted(out)

    def _fill(self) -> None:
        self.menu.clear()
        if self.shape is None:
            self.menu.addAction("Load a model first").setEnabled(False)
            return
        _, trained, now = self.shape
        for size in self.sizes():
            text = _label(size) + (" (trained size)" if size == trained else "")
            act = QAction(text, self.menu)
            act.setCheckable(True)
            act.setChecked(size == now)
            if size != trained:
                act.setToolTip("Position embeddings are resampled to this size: accuracy may change")
            act.triggered.connect(lambda _=False, s=size: self.choose(s))
            self._group.addAction(act)
            self.menu.addAction(act)
        self.menu.addSeparator()
        self.menu.addAction("Other Size…").triggered.connect(self.ask)

    def ask(self) -> None:
        patch = self.shape[0] if self.shape else 16
        text, ok = QInputDialog.getText(self.control.win, "Input size",
                                        f"Input size in pixels (a multiple of {patch}; e.g. 384 or 384x256):")  # fmt: skip
        if not ok:
            return
        size = parse_input_size(text)
        if size is None:
            self.control.win.status.say(
                f"{text.strip()[:40]!r} is not an input size (e.g. 384 or 384x256)", 8000
            )
            return
        self.choose(size)

    def choose(self, size: tuple[int, int]) -> None:
        c = self.control
        if c.model_id is None:
            return
        trained = self.shape[1] if self.shape else None
        c.load(c.model_id, labels=c.labels, input_size=None if size == trained else size)
