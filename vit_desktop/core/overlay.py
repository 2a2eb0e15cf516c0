"""Heat maps over original pixels, drawn with numpy and Pillow (no Qt).

The app and the command line both place a patch-grid map onto the original image through
the preprocessing :class:`~vit_desktop.core.preprocess.Geometry`, so a map lands on the
right pixels whatever the crop, padding or aspect ratio.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .defaults import OVERLAY_CMAP, OVERLAY_OPACITY
from .preprocess import Geometry

# Control points of the colour maps (sampled from matplotlib's definitions), 0 → 1.
_CMAPS: dict[str, list[tuple[float, float, float]]] = {
    "viridis": [(0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530),
                (0.207, 0.372, 0.553), (0.164, 0.471, 0.558), (0.128, 0.567, 0.551),
                (0.135, 0.659, 0.518), (0.267, 0.749, 0.441), (0.478, 0.821, 0.318),
                (0.741, 0.873, 0.150), (0.993, 0.906, 0.144)],
    "inferno": [(0.001, 0.000, 0.014), (0.087, 0.045, 0.225), (0.258, 0.039, 0.406),
                (0.416, 0.090, 0.433), (0.578, 0.148, 0.404), (0.735, 0.216, 0.330),
                (0.865, 0.317, 0.226), (0.954, 0.469, 0.099), (0.988, 0.645, 0.040),
                (0.964, 0.843, 0.273), (0.988, 0.998, 0.645)],
    "jet": [(0.0, 0.0, 0.5), (0.0, 0.0, 1.0), (0.0, 0.5, 1.0), (0.0, 1.0, 1.0),
            (0.5, 1.0, 0.5), (1.0, 1.0, 0.0), (1.0, 0.5, 0.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0)],
    "gray": [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)],
}  # fmt: skip
COLORMAPS = tuple(_CMAPS)
_LUTS: dict[str, np.ndarray] = {}


def lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table for ``name``."""
    if name not in _CMAPS:
        raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}")
    if name not in _LUTS:
        pts = np.asarray(_CMAPS[name], np.float64)
        xs = np.linspace(0, 1, len(pts))
        t = np.linspace(0, 1, 256)
        table = np.stack([np.interp(t, xs, pts[:, c]) for c in range(3)], axis=1)
        _LUTS[name] = np.round(table * 255).astype(np.uint8)
    return _LUTS[name]


def colorize(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Values in [0, 1] → (…, 3) uint8 colours."""
    idx = np.clip(np.round(values * 255), 0, 255).astype(np.uint8)
    return lut(cmap)[idx]


def _axis(n_out: int, n_orig: int, scale: float, offset: int, patch: int, cells: int, smooth: bool):
    """Per output pixel along one axis: (lower cell, upper cell, weight of upper, inside)."""
    centres = (np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_orig / n_out)
    pos = (centres * np.float32(scale) - np.float32(offset)) / np.float32(patch)
    inside = (pos >= 0) & (pos < cells)
    if smooth:
        f = np.clip(pos - 0.5, 0, cells - 1)
        lo = np.floor(f).astype(np.intp)
        return lo, np.minimum(lo + 1, cells - 1), (f - lo).astype(np.float32), inside
    lo = np.clip(np.floor(pos).astype(np.intp), 0, cells - 1)
    return lo, lo, np.zeros(n_out, np.float32), inside


def map_to_image(grid_map: np.ndarray, geom: Geometry, size: tuple[int, int] | None = None,
                 smooth: bool = True, rows: slice | None = None) -> np.ndarray:  # fmt: skip
    """Resample a (rows, cols) map to (height, width) original pixels through ``geom``.

    ``size`` is the (width, height) of the target raster (defaults to the original size;
    a smaller raster for a display stays in proportion); ``rows`` picks a band of it.
    Pixels outside the crop box get NaN (the model did not see them).  Bilinear and
    separable, in float32: a band costs only its own pixels."""
    ow, oh = geom.original_size
    w, h = size or (ow, oh)
    n_rows, n_cols = grid_map.shape
    x0, x1, wx, in_x = _axis(w, ow, geom.scale[0], geom.offset[0], geom.patch_size, n_cols, smooth)
    y0, y1, wy, in_y = _axis(h, oh, geom.scale[1], geom.offset[1], geom.patch_size, n_rows, smooth)
    if rows is not None:
        y0, y1, wy, in_y = y0[rows], y1[rows], wy[rows], in_y[rows]
    g = grid_map.astype(np.float32)
    across = g[:, x0] * (1 - wx) + g[:, x1] * wx  # (grid rows, w): interpolate along x first
    out = across[y0] * (1 - wy)[:, None]
    out += across[y1] * wy[:, None]
    out[~in_y, :] = np.nan
    out[:, ~in_x] = np.nan
    return out


def blend(image: Image.Image, grid_map: np.ndarray, geom: Geometry, cmap: str = OVERLAY_CMAP,
          opacity: float = OVERLAY_OPACITY, dim_unseen: float = 0.5, band: int = 256) -> Image.Image:  # fmt: skip
    """The heat map over ``image`` at the image's own resolution (for saving).

    Drawn in bands of ``band`` rows so a 24 MP photo needs tens of MB, not gigabytes."""
    from .maps import normalise

    base = np.asarray(image.convert("RGB"))
    h, w = base.shape[:2]
    norm = normalise(grid_map)
    a = np.float32(np.clip(opacity, 0, 1))
    out = np.empty_like(base)
    for top in range(0, h, band):
        rows = slice(top, min(h, top + band))
        m = map_to_image(norm, geom, (w, h), rows=rows)
        seen = ~np.isnan(m)
        src = base[rows].astype(np.float32)
        colours = colorize(np.nan_to_num(m), cmap).astype(np.float32)
        mixed = np.where(seen[..., None], src * (1 - a) + colours * a, src * np.float32(1 - dim_unseen))
        out[rows] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def render_on_original(image, grid_map: np.ndarray, geom: Geometry, cmap: str = OVERLAY_CMAP,
                       opacity: float = OVERLAY_OPACITY, max_pixels: int | None = None) -> Image.Image:  # fmt: skip
    """The overlay at the image's own resolution, for saving: ``image`` is a PIL image or a
    file's path (decoded here at full size, with the loader's checks).  Raises
    :class:`~vit_desktop.core.errors.VitDesktopError` subclasses only."""
    from .errors import OverlayError

    try:
        if not isinstance(image, Image.Image):
            from .images import load_image

            image = load_image(image, **({"max_pixels": max_pixels} if max_pixels else {})).image
        return blend(image, grid_map, geom, cmap, opacity)
    except MemoryError:
        raise OverlayError("not enough memory to draw the overlay at this image's resolution") from None


def save_png(image: Image.Image, path) -> None:
    """Write ``image`` as PNG at ``path`` (a file the person chose: replaced if it is there);
    a disk or permission problem becomes one readable line."""
    from .errors import OverlayError

    try:
        image.save(path, format="PNG")
    except OSError as exc:
        raise OverlayError(f"could not write the overlay: {exc.strerror or exc}") from None


STEM_BYTES = 100  # longer names are cut here and given a hash of the whole name


def overlay_path(out_dir, source: str, n: int = 0):
    """Candidate ``n`` for an image's overlay in ``out_dir``: ``NAME.overlay.png``, then
    ``NAME-1.overlay.png``, … A name over :data:`STEM_BYTES` bytes keeps its first bytes and
    a short hash of the whole name (two long names stay distinct; the file name stays far
    below the 255-byte limit)."""
    import hashlib
    import os
    from pathlib import Path

    name = Path(source).stem or "image"
    raw = os.fsencode(name)
    if len(raw) > STEM_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:10]
        kept, size = [], 0
        for ch in name:  # whole characters only: never half of a UTF-8 sequence
            size += len(os.fsencode(ch))
            if size > STEM_BYTES:
                break
            kept.append(ch)
        name = f"{''.join(kept)}~{digest}"
    return Path(out_dir) / (f"{name}-{n}.overlay.png" if n else f"{name}.overlay.png")


def save_new_png(image: Image.Image, out_dir, source: str):
    """Write ``image`` as PNG under the first free :func:`overlay_path` name in ``out_dir``
    and return that path.  The file is created new (``O_CREAT|O_EXCL|O_NOFOLLOW``): an
    existing file, or a link someone planted there, is never written through nor replaced;
    the next number is tried instead, without limit."""
    import contextlib
    import itertools
    import os

    from .errors import OverlayError

    new_file = (
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    )
    for n in itertools.count():
        path = overlay_path(out_dir, source, n)
        try:
            fd = os.open(path, new_file, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OverlayError(f"could not write the overlay: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                image.save(f, format="PNG")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)  # ours (made above), half written
            raise OverlayError(f"could not write the overlay: {exc.strerror or exc}") from None
        return path
    raise AssertionError("unreachable")  # itertools.count() does not end
