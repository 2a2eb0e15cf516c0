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

    def overlay_image(self):
        """The current overlay over the image at the image's own resolution (PIL)."""
        from ..core.images import load_image, to_rgb
        from ..core.overlay import blend

        item = self.items.get(self.current or "")
        grid = self.current_map()
        if item is None or grid is None:
            return None
        src = self._source_of(item.key)
        base = load_image(src).image if isinstance(src, str) else to_rgb(src)
        s = self.attention.settings()
        return blend(base, grid, item.result.geometry, s.cmap, s.opacity)

    def save_overlay(self) -> None:
        img = self.overlay_image()
        if img is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save overlay", "overlay.png", "PNG (*.png)")
        if path:
            img.save(path)

    def copy_overlay(self) -> None:
        img = self.overlay_image()
        if img is not None:
            QGuiApplication.clipboard().setImage(render.rgb_to_qimage(np.asarray(img)))

    def about(self) -> None:
        import PySide6

        from .. import __version__

        QMessageBox.about(self, "About ViT Desktop",
                          f"ViT Desktop {__version__}\nQt {PySide6.__version__}\nModel: {self.model_id}")  # fmt: skip
