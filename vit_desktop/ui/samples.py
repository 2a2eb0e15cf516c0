"""The empty window's way in: "Try sample images".

A button in the middle of the image pane while the window holds no image.  It draws the
sample set (:func:`vit_desktop.core.demo.samples.sample_images`: generated shapes, half of
them scenes with two different shapes; nothing is downloaded) into the cache folder on a
thread of its own — drawn once, reused after — and adds the images as a dropped folder
would: the first is shown, the others run in the background.  Clicking a prediction row
then shows why the model says that class.
"""

from __future__ import annotations

import os
import threading

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import QPushButton

from ..core.sources import FileSource
from ..core.text import one_line


class SampleOffer(QObject):
    ready = Signal(object)  # the image paths, or the reason there are none (a str)

    def __init__(self, win) -> None:
        super().__init__(win)
        self.win = win
        self.thread: threading.Thread | None = None
        self.button = QPushButton("Try sample images", win.view)
        self.button.setToolTip("Add a dozen generated pictures of shapes (some with two shapes) to see "
                               "what the model looks at: nothing is downloaded")  # fmt: skip
        self.button.setAccessibleName("Try sample images")
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.button.clicked.connect(self.start)
        self.ready.connect(self._on_ready, Qt.ConnectionType.QueuedConnection)
        win.gallery.model().rowsInserted.connect(self._update)
        win.view.installEventFilter(self)
        self._update()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if obj is self.win.view and event.type() in (QEvent.Type.Resize, QEvent.Type.Show):
            self._place()
        return False

    def _place(self) -> None:
        view, b = self.win.view, self.button
        b.adjustSize()
        b.move((view.width() - b.width()) // 2, view.height() // 2 + 3 * view.fontMetrics().height())

    def _update(self) -> None:
        self.button.setVisible(not self.win.session.items)
        self._place()

    def start(self) -> None:
        """Draw the samples (once) on a thread; they are added when ready."""
        if self.thread is not None and self.thread.is_alive():
            return
        self.button.setEnabled(False)
        self.win.status.say("Drawing sample images…", 30000)
        self.thread = threading.Thread(target=self._draw, name="sample-images", daemon=True)
        self.thread.start()

    def _draw(self) -> None:  # on its own thread
        try:
            from ..core.demo.samples import sample_images

            self.ready.emit([str(s.image) for s in sample_images()])
        except Exception as exc:  # a read-only cache folder, a full disk
            self.ready.emit(f"Sample images could not be written: {one_line(exc)}")

    def _on_ready(self, paths) -> None:
        self.button.setEnabled(True)
        if isinstance(paths, str):
            self.win.status.say(paths, 10000)
            return
        self.win.add([(p, os.path.basename(p), FileSource(p)) for p in paths])
        self.win.status.say(
            f"Added {len(paths)} generated sample images: click a prediction to see why", 10000
        )
        self._update()
