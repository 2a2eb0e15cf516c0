"""Side panels: predictions (top-k with bars; a click on a row, or the class picker, chooses
the class the class-specific maps explain) and attention controls (map kind — the
class-agnostic attention maps and the class-specific methods —, layer, head, fusion, discard
ratio, opacity, colour map) with an all-heads grid."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core import defaults, maps
from ..core.overlay import COLORMAPS
from ..core.results import ClassificationResult, TokenLayout
from . import plain
from .class_picker import ClassPicker
from .methods import AGNOSTIC_KINDS, CLASS_METHODS, PANEL_CONTROLS, TITLES

MAP_KINDS = AGNOSTIC_KINDS + tuple((m, TITLES[m]) for m in CLASS_METHODS)
_ROW_STYLE = "#predictionRow {{ border: 2px solid {}; border-radius: 4px; }}"


class PredictionRow(QFrame):
    """One prediction: its label and probability bar; a click (or Space) chooses its class."""

    clicked = Signal(int)  # the class index

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("predictionRow")
        self.index = -1
        self.chosen = False
        self.name = plain.label()
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.bar.setMaximumHeight(18)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.addWidget(self.name, 1)
        lay.addWidget(self.bar, 1)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.set_chosen(False)

    def set_chosen(self, chosen: bool) -> None:
        if chosen == self.chosen and self.styleSheet():
            return
        self.chosen = chosen
        self.setStyleSheet(_ROW_STYLE.format("palette(highlight)" if chosen else "transparent"))

    def mousePressEvent(self, event) -> None:  # noqa: N802
        event.setAccepted(event.button() == Qt.MouseButton.LeftButton)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(event.position().toPoint()):
            self.clicked.emit(self.index)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.clicked.emit(self.index)
        else:
            super().keyPressEvent(event)


class PredictionsPanel(QWidget):
    targetChosen = Signal(int)  # a class index: a row clicked, or a class picked

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._result: ClassificationResult | None = None
        self._target: int | None = None
        lay = QVBoxLayout(self)
        head = QFormLayout()
        self.k = QSpinBox()
        self.k.setRange(1, 20)
        self.k.setValue(5)
        self.k.setAccessibleName("Number of predictions")
        self.k.valueChanged.connect(self._refill)
        head.addRow("Top-k", self.k)
        lay.addLayout(head)
        self.rows = QVBoxLayout()
        self.rows.setSpacing(0)
        self._row_widgets: list[PredictionRow] = []
        lay.addLayout(self.rows)
        self._add_rows(self.k.value())  # made (and styled) now, not on the first result's arrival
        hint = QLabel("Click a prediction to see why the model says it.")
        hint.setWordWrap(True)
        hint.setEnabled(False)  # greyed: a hint, not a value
        lay.addWidget(hint)
        self.picker = ClassPicker()
        self.picker.chosen.connect(self.targetChosen)
        pick = QFormLayout()
        pick.addRow("Explain", self.picker)
        lay.addLayout(pick)
        self.copy = QPushButton("Copy top label")
        self.copy.clicked.connect(self.copy_label)
        self.copy.setEnabled(False)
        lay.addWidget(self.copy)
        lay.addStretch(1)

    def set_result(self, res: ClassificationResult | None) -> None:
        self._result = res
        self.copy.setEnabled(res is not None)
        self._refill()

    def labels(self) -> list[tuple[str, float]]:
        return [(label, prob) for _, label, prob in self.predictions()]

    def predictions(self) -> list[tuple[int, str, float]]:
        """(class index, label, probability) of the rows shown, most probable first."""
        if self._result is None:
            return []
        probs = self._result.probs
        order = probs.argsort()[::-1][: self.k.value()]
        names = {p.index: p.label for p in self._result.top_k}
        return [(int(i), names.get(int(i), f"class {int(i)}"), float(probs[i])) for i in order]

    @property
    def row_widgets(self) -> list[PredictionRow]:
        """The rows shown, in order."""
        return [w for w in self._row_widgets if not w.isHidden()]

    def set_target(self, index: int | None) -> None:
        """Mark the class the maps explain (its row, if shown; the picker)."""
        self._target = index
        for w in self._row_widgets:
            w.set_chosen(index is not None and w.index == index and not w.isHidden())
        self.picker.show_target(index)

    def set_class_names(self, names: tuple[str, ...]) -> None:
        self.picker.set_labels(names)
        self.picker.show_target(self._target)

    def _refill(self) -> None:
        """Rows are made once and reused: nothing is created or deleted per result."""
        rows = self.predictions()
        self._add_rows(len(rows))
        for r, row in enumerate(self._row_widgets):
            if r < len(rows):
                index, label, prob = rows[r]
                row.index = index
                row.name.setText(plain.shown(label))
                row.name.setToolTip(plain.tooltip(label))
                row.bar.setValue(int(round(prob * 1000)))
                row.bar.setFormat(f"{prob * 100:.1f}%")
                row.setAccessibleName(f"{plain.shown(label)}: {prob * 100:.1f}%")
                row.setToolTip(plain.tooltip(f"Click to explain {label}"))
            row.setVisible(r < len(rows))
        self.set_target(self._target)

    def _add_rows(self, count: int) -> None:
        while len(self._row_widgets) < count:
            row = PredictionRow()
            row.clicked.connect(self.targetChosen)
            row.setVisible(False)
            self.rows.addWidget(row)
            row.ensurePolished()
            self._row_widgets.append(row)

    def copy_label(self) -> None:
        if self._result is not None:
            QGuiApplication.clipboard().setText(self._result.top1.label)


@dataclass(frozen=True)
class ViewSettings:
    kind: str = "cls"  # cls | fused | rollout, or a class-specific method (methods.CLASS_METHODS)
    layer: int = -1
    head: int = 0
    fusion: str = "mean"
    discard: float = 0.0
    opacity: float = defaults.OVERLAY_OPACITY
    cmap: str = defaults.OVERLAY_CMAP
    #: The token whose attention the maps show: None for the model's own query (the CLS token,
    #: or the mean of the patch tokens), else a prefix token's index (a distillation token).
    query: int | None = None

    def map_spec(self) -> maps.MapSpec:
        if self.kind == "rollout":
            return maps.MapSpec("rollout", fusion=self.fusion, discard_ratio=self.discard)
        if self.kind == "fused":
            return maps.MapSpec("cls", layer=self.layer, fusion=self.fusion)
        return maps.MapSpec("cls", layer=self.layer, head=self.head)


class AttentionPanel(QWidget):
    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.kind = QComboBox()
        for key, text in MAP_KINDS:
            if key == CLASS_METHODS[0]:
                self.kind.insertSeparator(self.kind.count())
            self.kind.addItem(text, key)
            if key in CLASS_METHODS:
                self.kind.setItemData(self.kind.count() - 1, "Explains the chosen class (computed by the model)",
                                      Qt.ItemDataRole.ToolTipRole)  # fmt: skip
        self.layer = QSlider(Qt.Orientation.Horizontal)
        self.layer.setRange(0, 0)
        self.layer_label = QLabel("–")
        self.head = QComboBox()
        self.fusion = QComboBox()
        for f in ("mean", "max", "min"):
            self.fusion.addItem(f, f)
        self.discard = QSlider(Qt.Orientation.Horizontal)
        self.discard.setRange(0, 95)
        self.discard_label = QLabel("0%")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(defaults.OVERLAY_OPACITY * 100))
        self.cmap = QComboBox()
        for c in COLORMAPS:
            self.cmap.addItem(c, c)
        self.cmap.setCurrentText(defaults.OVERLAY_CMAP)
        self.query = QComboBox()
        self.query.setToolTip("Whose attention the maps show")
        self.query_note = QLabel()
        self.query_note.setWordWrap(True)
        self.prefix_note = QLabel()
        self.prefix_note.setWordWrap(True)
        self.target_note = plain.label()  # the class a class-specific map explains (a label: plain text)
        self.target_note.setWordWrap(True)
        self.exact_note = QLabel("Approximate maps: this large model's queries and keys are kept in "
                                 "float16 (CLS attention and the class-specific maps stay exact).")  # fmt: skip
        self.exact_note.setWordWrap(True)
        self.exact_note.hide()
        form.addRow("Map", self.kind)
        form.addRow(self.target_note)
        form.addRow("Query", self.query)
        form.addRow(self.query_note)
        form.addRow("Layer", self.layer)
        form.addRow("", self.layer_label)
        form.addRow("Head", self.head)
        form.addRow("Fusion", self.fusion)
        form.addRow("Rollout discard", self.discard)
        form.addRow("", self.discard_label)
        form.addRow("Opacity", self.opacity)
        form.addRow("Colours", self.cmap)
        self.heads_box = QWidget()
        self.heads_grid = QGridLayout(self.heads_box)
        self.heads_grid.setSpacing(3)
        self.heads_grid.setContentsMargins(0, 0, 0, 0)
        self._head_buttons: list[QToolButton] = []
        form.addRow(QLabel("All heads (this layer)"))
        form.addRow(self.heads_box)
        form.addRow(self.prefix_note)
        form.addRow(self.exact_note)
        self.form = form
        self.configure_tokens(TokenLayout())
        for w, sig in ((self.kind, "currentIndexChanged"), (self.query, "currentIndexChanged"),
                       (self.layer, "valueChanged"),
                       (self.head, "currentIndexChanged"), (self.fusion, "currentIndexChanged"),
                       (self.discard, "valueChanged"), (self.opacity, "valueChanged"),
                       (self.cmap, "currentIndexChanged")):  # fmt: skip
            getattr(w, sig).connect(self._on_change)
        self._update_enabled()

    def configure(self, layers: int, heads: int) -> None:
        """Fit the controls to a model (layers, heads) without losing the person's choices."""
        keep_last = self.layer.value() == self.layer.maximum()
        self.layer.blockSignals(True)
        self.layer.setRange(0, max(0, layers - 1))
        if keep_last:
            self.layer.setValue(layers - 1)
        self.layer.blockSignals(False)
        self.head.blockSignals(True)
        current = self.head.currentIndex()
        self.head.clear()
        for h in range(heads):
            self.head.addItem(f"head {h + 1}", h)
        self.head.setCurrentIndex(min(max(current, 0), heads - 1))
        self.head.blockSignals(False)
        self._update_enabled()
        self._update_labels()

    def configure_tokens(self, layout: TokenLayout) -> None:
        """Offer the queries the model has (its CLS token, a distillation token), or say that
        the maps show the mean of the patch tokens for a model without a CLS token."""
        self.query.blockSignals(True)
        keep = self.query.currentData()
        self.query.clear()
        if layout.query == "mean":
            self.query.addItem("mean of patches", -1)
        else:
            self.query.addItem("CLS token", -1)
            for i, name in enumerate(layout.prefix):
                if name == "distillation":
                    self.query.addItem("distillation token", i)
        self.query.setCurrentIndex(max(0, self.query.findData(keep)))
        self._update_enabled()
        self.query.blockSignals(False)
        self.query_note.setText(
            ""
            if layout.query == "cls"
            else "This model has no CLS token: the maps show the mean of the patch tokens' attention."
        )
        self.query_note.setVisible(layout.query != "cls")

    def add_section(self, widget: QWidget) -> None:
        """A part below the controls (the faithfulness score)."""
        self.form.addRow(widget)

    def set_target_note(self, text: str) -> None:
        self.target_note.setText(text)
        self.target_note.setVisible(bool(text))

    def set_approximate(self, approximate: bool) -> None:
        """Say, in one line, when the attention maps come from float16 queries and keys."""
        self.exact_note.setVisible(approximate)

    def set_prefix_note(self, text: str) -> None:
        """A line under the heads: how much attention goes to register tokens, per head."""
        self.prefix_note.setText(text)
        self.prefix_note.setVisible(bool(text))

    def settings(self) -> ViewSettings:
        return ViewSettings(
            kind=self.kind.currentData(),
            layer=self.layer.value(),
            head=max(0, self.head.currentIndex()),
            fusion=self.fusion.currentData(),
            discard=self.discard.value() / 100.0,
            opacity=self.opacity.value() / 100.0,
            cmap=self.cmap.currentData(),
            query=None if (q := self.query.currentData()) is None or q < 0 else int(q),
        )

    def apply(self, s: ViewSettings) -> None:
        for w in (self.kind, self.fusion, self.cmap):
            w.blockSignals(True)
        self.kind.setCurrentIndex(max(0, self.kind.findData(s.kind)))
        self.fusion.setCurrentIndex(max(0, self.fusion.findData(s.fusion)))
        self.cmap.setCurrentIndex(max(0, self.cmap.findData(s.cmap)))
        self.discard.setValue(int(round(s.discard * 100)))
        self.opacity.setValue(int(round(s.opacity * 100)))
        for w in (self.kind, self.fusion, self.cmap):
            w.blockSignals(False)
        self._on_change()

    def set_head_images(self, pixmaps: list[QPixmap]) -> None:
        """One small map per head of the current layer; clicking one shows that head.
        The buttons are made once and reused."""
        cols = 4
        while len(self._head_buttons) < len(pixmaps):
            i = len(self._head_buttons)
            btn = QToolButton()
            btn.setAutoRaise(True)
            btn.setToolTip(f"head {i + 1}: click to show it")
            btn.setAccessibleName(f"Head {i + 1}")
            btn.clicked.connect(lambda _=False, h=i: self.show_head(h))
            self.heads_grid.addWidget(btn, i // cols, i % cols)
            self._head_buttons.append(btn)
        for i, btn in enumerate(self._head_buttons):
            if i < len(pixmaps):
                btn.setIcon(QIcon(pixmaps[i]))
                btn.setIconSize(pixmaps[i].size())
            btn.setVisible(i < len(pixmaps))

    def show_head(self, head: int) -> None:
        self.kind.setCurrentIndex(self.kind.findData("cls"))
        self.head.setCurrentIndex(head)

    def _update_enabled(self) -> None:
        """The controls the map on screen takes (methods.PANEL_CONTROLS); the others greyed."""
        used = PANEL_CONTROLS.get(self.kind.currentData(), ())
        self.head.setEnabled("head" in used)
        self.fusion.setEnabled("fusion" in used)
        self.discard.setEnabled("discard" in used)
        self.layer.setEnabled("layer" in used)
        self.query.setEnabled("query" in used and self.query.count() > 1)

    def _update_labels(self) -> None:
        s = self.settings()
        self.layer_label.setText(f"layer {s.layer + 1} of {self.layer.maximum() + 1}")
        self.discard_label.setText(f"{s.discard:.0%}")

    def _on_change(self) -> None:
        self._update_enabled()
        self._update_labels()
        self.changed.emit()
