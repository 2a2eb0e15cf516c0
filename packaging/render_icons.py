"""Render the app icon's PNG, ICO and ICNS files from ``resources/icons/vit-desktop.svg``.

    python packaging/render_icons.py        # rewrites resources/icons/*.png, .ico, .icns

The SVG is the source; the other files are committed so that neither the wheel nor the
frozen build needs Qt's SVG module at build time.  PNGs are drawn with Qt's own SVG
renderer (the same one the desktop uses); Pillow packs them into ``.ico`` (Windows) and
``.icns`` (macOS).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons"
SVG = ICONS / "vit-desktop.svg"
PNG_SIZES = (16, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICNS_SIZES = (16, 32, 64, 128, 256, 512, 1024)


def render_png(size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        raise SystemExit(f"{SVG} is not a valid SVG")
    img = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(Qt.GlobalColor.transparent)
    painter = QPainter(img)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    buf.close()
    return bytes(data.data())


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (keeps Qt alive)
    rendered = {s: render_png(s) for s in sorted(set(PNG_SIZES + ICO_SIZES + ICNS_SIZES))}
    for s in PNG_SIZES:
        (ICONS / f"vit-desktop-{s}.png").write_bytes(rendered[s])
    images = {s: Image.open(io.BytesIO(b)).convert("RGBA") for s, b in rendered.items()}
    # Each size is drawn by the SVG renderer at that size (crisper than downscaling one bitmap).
    big = images[max(ICO_SIZES)]
    big.save(ICONS / "vit-desktop.ico", sizes=[(s, s) for s in ICO_SIZES],
             append_images=[images[s] for s in ICO_SIZES if s != max(ICO_SIZES)])  # fmt: skip
    images[1024].save(ICONS / "vit-desktop.icns", append_images=[images[s] for s in ICNS_SIZES[:-1]])
    for p in sorted(ICONS.iterdir()):
        print(f"{p.relative_to(ROOT)}\t{p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
