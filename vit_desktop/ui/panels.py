"""Side panels: predictions (top-k with bars) and attention controls (map kind, layer,
head, fusion, discard ratio, opacity, colour map) with an all-heads grid."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
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

MAP_KINDS = (("cls", "CLS attention"), ("fused", "Fused heads"), ("rollout", "Attention rollout"))


class PredictionsPanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._result: ClassificationResult | None = None
        lay = QVBoxLayout(self)
        head = QFormLayout()
        self.k = QSpinBox()
        self.k.setRange(1, 20)
        self.k.setValue(5)
        self.k.setAccessibleName("Number of predictions")
        self.k.valueChanged.connect(self._refill)
        head.addRow("Top-k", self.k)
        lay.addLayout(head)
        self.rows = QGridLayout()
        self._row_widgets: list[tuple[QLabel, QProgressBar]] = []
        lay.addLayout(self.rows)
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
        if self._result is None:
            return []
        probs = self._result.probs
        order = probs.argsort()[::-1][: self.k.value()]
        names = {p.index: p.label for p in self._result.top_k}
        return [(names.get(int(i), f"class {int(i)}"), float(probs[i])) for i in order]

    def _refill(self) -> None:
        """Rows are made once and reused: nothing is created or deleted per result."""
        rows = self.labels()
        while len(self._row_widgets) < len(rows):
            name = plain.label()
            name.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            bar.setMaximumHeight(18)
            r = len(self._row_widgets)
            self.rows.addWidget(name, r, 0)
            self.rows.addWidget(bar, r, 1)
            self._row_widgets.append((name, bar))
        for r, (name, bar) in enumerate(self._row_widgets):
            if r < len(rows):
                label, prob = rows[r]
                name.setText(plain.shown(label))
                name.setToolTip(plain.tooltip(label))
                bar.setValue(int(round(prob * 1000)))
                bar.setFormat(f"{prob * 100:.1f}%")
                bar.setAccessibleName(f"{plain.shown(label)}: {prob * 100:.1f}%")
            name.setVisible(r < len(rows))
            bar.setVisible(r < len(rows))

    def copy_label(self) -> None:
        if self._result is not None:
            QGuiApplication.clipboard().setText(self._result.top1.label)


@dataclass(frozen=True)
class ViewSettings:
    kind: str = "cls"  # cls | fused | rollout
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
            self.kind.addItem(text, key)
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
        form.addRow("Map", self.kind)
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
        self.query.setEnabled(self.query.count() > 1)
        self.query.blockSignals(False)
        self.query_note.setText(
            "" if layout.query == "cls" else "This model has no CLS token: the maps show the mean of the "
            "patch tokens' attention."
        )
        self.query_note.setVisible(layout.query != "cls")

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
        kind = self.kind.currentData()
        self.head.setEnabled(kind == "cls")
        self.fusion.setEnabled(kind in ("fused", "rollout"))
        self.discard.setEnabled(kind == "rollout")
        self.layer.setEnabled(kind in ("cls", "fused"))

    def _update_labels(self) -> None:
        s = self.settings()
        self.layer_label.setText(f"layer {s.layer + 1} of {self.layer.maximum() + 1}")
        self.discard_label.setText(f"{s.discard:.0%}")

    def _on_change(self) -> None:
        self._update_enabled()
        self._update_labels()
        self.changed.emit()
