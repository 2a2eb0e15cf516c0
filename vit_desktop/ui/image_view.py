"""The image pane: the picture, the attention overlay through the geometry, the patch grid,
the crop box with the unseen area dimmed, zoom, pan and hover.

Everything is placed in the original image's pixel coordinates, whatever the size of the
copy on screen: a draft copy can give way to the sharp one (:meth:`ImageView.swap_image`)
without moving the overlay, the grid or the view."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..core.preprocess import Geometry
from .pixels import ScreenCopy


class ImageView(QWidget):
    hoveredPatch = Signal(int, int)  # row, col
    hoverLeft = Signal()
    stepRequested = Signal(int)  # arrow keys: -1 previous image, +1 next

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(240, 180)
        self._image: ScreenCopy | QImage | None = None  # what set_image was given
        self._copy: ScreenCopy | None = None  # the same, with its levels
        self._original: tuple[int, int] = (0, 0)
        self._overlay: QImage | None = None
        self._geometry: Geometry | None = None
        self._hover: tuple[int, int] | None = None
        self.show_grid = True
        self._zoom = 1.0
        self._offset = QPointF(0, 0)
        self._fit = True
        self._drag: QPointF | None = None
        self.placeholder = "Drop images here\n(or File › Open, Ctrl+O)"
        self.drop_hint: tuple[bool, str] | None = None  # (accepted, what a drop would do)
        self.setAccessibleName("Image")

    # -- content -----------------------------------------------------------------------
    def set_image(
        self, image: ScreenCopy | QImage | None, original_size: tuple[int, int] | None = None
    ) -> None:
        """A new picture: the overlay, geometry and hover go, the view fits it."""
        self._image = image
        self._copy = _copy_of(image)
        self._original = original_size or ((image.width(), image.height()) if image else (0, 0))
        self._overlay = None
        self._geometry = None
        self._hover = None
        self._fit = True
        self.update()

    def swap_image(self, image: ScreenCopy | QImage) -> None:
        """The same picture, sharper (the sharp copy after the draft): the original size,
        geometry, overlay, hover, zoom and pan stay as they are, so nothing moves."""
        self._image = image
        self._copy = _copy_of(image)
        self.update()

    @property
    def picture(self) -> QImage | None:
        """The largest copy of the picture the view holds (its screen copy)."""
        return self._copy.levels[0] if self._copy is not None else None

    def set_geometry(self, geom: Geometry | None) -> None:
        self._geometry = geom
        self.update()

    def set_overlay(self, overlay: QImage | None) -> None:
        self._overlay = overlay
        self.update()

    def set_drop_hint(self, hint: tuple[bool, str] | None) -> None:
        self.drop_hint = hint
        self.update()

    def set_show_grid(self, on: bool) -> None:
        self.show_grid = on
        self.update()

    # -- view transform ------------------------------------------------------------------
    def _fit_params(self) -> tuple[float, QPointF]:
        ow, oh = self._original
        if ow <= 0 or oh <= 0:
            return 1.0, QPointF(0, 0)
        z = min(self.width() / ow, self.height() / oh)
        return z, QPointF((self.width() - ow * z) / 2, (self.height() - oh * z) / 2)

    def _transform(self) -> tuple[float, QPointF]:
        if self._fit:
            return self._fit_params()
        return self._zoom, self._offset

    def to_original(self, p: QPointF) -> tuple[float, float]:
        z, off = self._transform()
        return (p.x() - off.x()) / z, (p.y() - off.y()) / z

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        z, off = self._transform()
        anchor = anchor or QPointF(self.width() / 2, self.height() / 2)
        new_z = max(0.02, min(40.0, z * factor))
        ox, oy = (anchor.x() - off.x()) / z, (anchor.y() - off.y()) / z
        self._zoom = new_z
        self._offset = QPointF(anchor.x() - ox * new_z, anchor.y() - oy * new_z)
        self._fit = False
        self.update()

    def fit(self) -> None:
        self._fit = True
        self.update()

    def actual_size(self) -> None:
        z, off = self._transform()
        self.zoom_by(1.0 / z)

    @property
    def zoom(self) -> float:
        return self._transform()[0]

    # -- painting -------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().window())
        if self._image is None:
            p.setPen(self.palette().text().color())
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            self._paint_drop_hint(p)
            return
        ow, oh = self._original
        z, off = self._transform()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, z < 2)
        p.translate(off)
        p.scale(z, z)
        target = QRectF(0, 0, ow, oh)
        # The smallest level at least as large as the picture on screen: the painter shrinks
        # it to no less than half its size (a millisecond or two, and sharp enough); the GUI
        # thread never resizes the full screen copy.
        p.drawImage(target, self._copy.level_for(ow * z * self.devicePixelRatioF()))
        if self._overlay is not None:
            p.drawImage(target, self._overlay)
        g = self._geometry
        if g is not None:
            self._paint_geometry(p, g, z)
        p.resetTransform()
        self._paint_drop_hint(p)
        p.end()

    def _paint_drop_hint(self, p: QPainter) -> None:
        """While something is dragged over the window: a highlighted frame and what a drop
        would do (or why it cannot be dropped)."""
        if self.drop_hint is None:
            return
        ok, text = self.drop_hint
        color = QColor(70, 160, 255) if ok else QColor(230, 90, 70)
        fill = QColor(color)
        fill.setAlpha(60)
        r = QRectF(self.rect()).adjusted(6, 6, -6, -6)
        p.fillRect(r, fill)
        pen = QPen(color)
        pen.setWidthF(3)
        pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.drawRoundedRect(r, 10, 10)
        band = QRectF(r.left() + 20, r.center().y() - 40, r.width() - 40, 80)
        p.fillRect(band, QColor(0, 0, 0, 170))
        p.setPen(QColor(255, 255, 255))
        font = p.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        p.setFont(font)
        p.drawText(band, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)

    def _paint_geometry(self, p: QPainter, g: Geometry, z: float) -> None:
        ow, oh = self._original
        left, top, right, bottom = g.visible_box
        dim = QColor(0, 0, 0, 130)
        # The parts of the photo the model never saw (cropped away) are dimmed.
        for r in (QRectF(0, 0, ow, top), QRectF(0, bottom, ow, oh - bottom),
                  QRectF(0, top, left, bottom - top), QRectF(right, top, ow - right, bottom - top)):  # fmt: skip
            if r.width() > 0 and r.height() > 0:
                p.fillRect(r, dim)
        pen = QPen(QColor(255, 255, 255, 200))
        pen.setCosmetic(True)
        pen.setWidthF(1.5)
        p.setPen(pen)
        p.drawRect(QRectF(left, top, right - left, bottom - top))
        rows, cols = g.patch_grid
        if self.show_grid:
            gpen = QPen(QColor(255, 255, 255, 70))
            gpen.setCosmetic(True)
            p.setPen(gpen)
            for c in range(1, cols):
                x = g.patch_box(0, c)[0]
                if left < x < right:
                    p.drawLine(QPointF(x, top), QPointF(x, bottom))
            for r in range(1, rows):
                y = g.patch_box(r, 0)[1]
                if top < y < bottom:
                    p.drawLine(QPointF(left, y), QPointF(right, y))
        if self._hover is not None:
            x0, y0, x1, y1 = g.patch_box(*self._hover)
            hpen = QPen(QColor(80, 220, 255))
            hpen.setCosmetic(True)
            hpen.setWidthF(2.5)
            p.setPen(hpen)
            p.drawRect(QRectF(x0, y0, x1 - x0, y1 - y0))

    # -- keys and mouse -------------------------------------------------------------------
    def keyPressEvent(self, event) -> None:  # noqa: N802
        step = {Qt.Key.Key_Right: 1, Qt.Key.Key_Down: 1, Qt.Key.Key_Left: -1, Qt.Key.Key_Up: -1}
        if event.key() in step and not event.modifiers():
            self.stepRequested.emit(step[event.key()])
            return
        super().keyPressEvent(event)

    def wheelEvent(self, event) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.15**steps, event.position())

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag = event.position()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        self._drag = None

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = event.position()
        if self._drag is not None and self._image is not None:
            z, off = self._transform()
            delta = pos - self._drag
            self._zoom, self._offset, self._fit = z, off + delta, False
            self._drag = pos
            self.update()
        if self._geometry is None:
            return
        cell = self._geometry.patch_at(*self.to_original(pos))
        if cell != self._hover:
            self._hover = cell
            self.update()
            if cell is None:
                self.hoverLeft.emit()
            else:
                self.hoveredPatch.emit(*cell)

    def leaveEvent(self, event) -> None:  # noqa: N802
        if self._hover is not None:
            self._hover = None
            self.update()
        self.hoverLeft.emit()


def _copy_of(image: ScreenCopy | QImage | None) -> ScreenCopy | None:
    if image is None or isinstance(image, ScreenCopy):
        return image
    if image.format() not in (QImage.Format.Format_RGB32, QImage.Format.Format_ARGB32_Premultiplied):
        image = image.convertToFormat(QImage.Format.Format_RGB32)  # drawn without converting it each time
    return ScreenCopy((image,))
