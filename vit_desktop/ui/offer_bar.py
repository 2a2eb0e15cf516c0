"""A small, dismissable bar above the image: offers the ImageNet model when the window
started on the demo model because ViT-B/16's weights are not on disk."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton


class OfferBar(QFrame):
    accepted = Signal()
    dismissed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("offerBar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#offerBar { background: palette(alternate-base); }")
        self.label = QLabel()
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)
        self.button = QPushButton("Download")
        self.button.clicked.connect(self.accepted)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss (not shown again)")
        self.close_button.setAccessibleName("Dismiss")
        self.close_button.clicked.connect(self.dismissed)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.button)
        lay.addWidget(self.close_button)
        self.hide()

    def offer(self, entry: dict) -> None:
        size = entry.get("file_size_mb") or 0
        self.entry = entry
        self.label.setText(
            f"Showing the demo model (10 shapes). {entry['display_name']} recognises ImageNet's "
            f"1,000 classes: download its weights ({size:.0f} MB)?"
        )
        self.button.setText(f"Download {size:.0f} MB")
        self.show()
