"""The window's file actions: open dialogs, export, save and copy the overlay, About."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QMessageBox

from . import render, transfer

IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.webp *.gif *.bmp *.tif *.tiff *.avif);;All files (*)"


class FileActions:
    """Mixed into MainWindow: uses its items, current key, attention panel and model id."""

    def open_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", "", IMAGE_FILTER)
        if paths:
            self.add_paths(paths)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder")
        if folder:
            self.add_paths([folder])

    def export_results(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export results", "results.json", "JSON lines (*.json);;CSV (*.csv)"
        )
        if path:
            self.write_results(path)

    def write_results(self, path: str) -> None:
        rows = (
            item.result.to_dict() if item.result is not None else {"path": item.key, "error": item.error}
            for item in self.items.values()
            if item.result is not None or item.error
        )
        transfer.write_results(rows, path)

    def _request_overlay(self, out: str) -> bool:
        """Render the current overlay at the image's own resolution in the worker (the file
        is decoded there, not here); ``overlayExported`` says when it is done."""
        item = self.items.get(self.current or "")
        grid = self.current_map()
        if item is None or grid is None or item.result is None:
            self.statusBar().showMessage("No overlay to export yet: open an image first", 5000)
            return False
        s = self.attention.settings()
        self.requestOverlay.emit(item.key, item.source, (grid, item.result.geometry), s.cmap, s.opacity, out)
        return True

    def save_overlay_to(self, path: str) -> bool:
        return self._request_overlay(path)

    def save_overlay(self) -> None:
        if self.current_map() is None:
            self._request_overlay("")  # says why
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save overlay", "overlay.png", "PNG (*.png)")
        if path:
            self._request_overlay(path)

    def copy_overlay(self) -> None:
        self._request_overlay("")

    def _on_overlay_rendered(self, out: str, arr, error: str) -> None:
        if error:
            self.statusBar().showMessage(f"Overlay not exported: {error}", 10000)
        elif out:
            self.statusBar().showMessage(f"Saved the overlay to {out}", 6000)
        elif arr is not None:
            QGuiApplication.clipboard().setImage(render.rgb_to_qimage(np.asarray(arr)))
            self.statusBar().showMessage("Overlay copied to the clipboard", 4000)
        self.overlayExported.emit(out, error)

    def open_log_folder(self) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        from ..logs import log_dir

        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.statusBar().showMessage(f"The log folder is {folder}", 15000)

    def about(self) -> None:
        from .help import about_text

        device = self.status_device.text() or None
        QMessageBox.about(self, "About ViT Desktop", about_text(self.model_name or self.model_id, device))
