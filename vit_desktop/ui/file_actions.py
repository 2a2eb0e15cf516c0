"""The window's file actions: open dialogs, export, save and copy the overlay, the log
folder and About.  Composed into the window (``window.files``)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QMessageBox

from ..core.export import write_results
from . import render

IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.webp *.gif *.bmp *.tif *.tiff *.avif);;All files (*)"


class FileActions(QObject):
    overlayExported = Signal(str, str)  # destination ("" = clipboard), error ("" = fine)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.win = window
        window.worker.worker.overlayRendered.connect(self._on_overlay_rendered)

    def open_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self.win, "Open images", "", IMAGE_FILTER)
        if paths:
            self.win.add_paths(paths)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.win, "Open folder")
        if folder:
            self.win.add_paths([folder])

    def export_results(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.win, "Export results", "results.json", "JSON lines (*.json);;CSV (*.csv)"
        )
        if path:
            self.write_results(path)

    def write_results(self, path: str) -> None:
        """Every finished image, as the command line writes them (names that are not UTF-8
        kept as \\xNN escapes)."""
        try:
            n = write_results(self.win.session.records(), path)
        except OSError as exc:
            self.win.status.say(f"Results not exported: {exc.strerror or exc}", 10000)
            return
        self.win.status.say(f"Exported {n} results to {path}", 6000)

    def request_overlay(self, out: str) -> bool:
        """Render the current overlay at the image's own resolution in the worker (the file
        is decoded there, not here); ``overlayExported`` says when it is done."""
        item = self.win.session.shown
        grid = self.win.overlay.current_map()
        if item is None or grid is None or item.result is None:
            self.win.status.say("No overlay to export yet: open an image first", 5000)
            return False
        s = self.win.attention.settings()
        self.win.requestOverlay.emit(
            item.key, item.source, (grid, item.result.geometry), s.cmap, s.opacity, out
        )
        return True

    def save_overlay(self) -> None:
        if self.win.overlay.current_map() is None:
            self.request_overlay("")  # says why
            return
        path, _ = QFileDialog.getSaveFileName(self.win, "Save overlay", "overlay.png", "PNG (*.png)")
        if path:
            self.request_overlay(path)

    def copy_overlay(self) -> None:
        self.request_overlay("")

    def _on_overlay_rendered(self, out: str, arr, error: str) -> None:
        if error:
            self.win.status.say(f"Overlay not exported: {error}", 10000)
        elif out:
            self.win.status.say(f"Saved the overlay to {out}", 6000)
        elif arr is not None:
            QGuiApplication.clipboard().setImage(render.rgb_to_qimage(np.asarray(arr)))
            self.win.status.say("Overlay copied to the clipboard", 4000)
        self.overlayExported.emit(out, error)

    def open_log_folder(self) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        from ..logs import log_dir

        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.win.status.say(f"The log folder is {folder}", 15000)

    def about(self) -> None:
        from .help import about_text

        models = self.win.models
        device = self.win.status.device.text() or None
        box = QMessageBox(QMessageBox.Icon.Information, "About ViT Desktop",
                          about_text(models.model_name or models.model_id, device), parent=self.win)  # fmt: skip
        box.setTextFormat(self.win.plain_text)  # a checkpoint's file name is never markup
        box.exec()
