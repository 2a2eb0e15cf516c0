from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vit_desktop.core.errors import ImageLoadError
from vit_desktop.core.images import fit_within, load_image, to_rgb


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def _gradient(w=120, h=80):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.full((h, w, 1), 90, np.float32)], axis=2)  # fmt: skip
    return Image.fromarray(arr.astype(np.uint8), "RGB")


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"),
                                     ("BMP", "bmp"), ("TIFF", "tif"), ("GIF", "gif")])  # fmt: skip
def test_formats_decode_to_rgb(tmp_path, fmt, ext):
    path = _save(_gradient(), tmp_path / f"a.{ext}", format=fmt)
    got = load_image(path)
    assert got.image.mode == "RGB"
    assert got.image.size == (120, 80) == got.original_size
    assert got.format == fmt


def test_avif_when_pillow_supports_it(tmp_path):
    from PIL import features

    path = tmp_path / "a.avif"
    if features.check("avif"):
        _save(_gradient(), path, format="AVIF")
        assert load_image(path).image.size == (120, 80)
    else:  # a Pillow without the codec: a clear typed error, not a crash
        path.write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(64))
        with pytest.raises(ImageLoadError):
            load_image(path)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    px = load_image(path).image.getpixel((5, 5))
    assert px[0] > 200 and px[1] < 50 and px[2] < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    # A 60×30 image with a red left half; EXIF says how to turn it upright.
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    img.save(path, exif=exif, quality=95)
    got = load_image(path)
    expected = {1: (60, 30), 2: (60, 30), 3: (60, 30), 4: (60, 30)}.get(orientation, (30, 60))
    assert got.original_size == expected == got.image.size
    # The same transposition Pillow documents for each orientation, done on the array.
    ref = np.asarray(_reference_orient(img, orientation))
    diff = np.abs(np.asarray(got.image).astype(int) - ref.astype(int)).mean()
    assert diff < 12


def _reference_orient(img, o):
    T = Image.Transpose
    ops = {2: [T.FLIP_LEFT_RIGHT], 3: [T.ROTATE_180], 4: [T.FLIP_TOP_BOTTOM], 5: [T.TRANSPOSE],
           6: [T.ROTATE_270], 7: [T.TRANSVERSE], 8: [T.ROTATE_90]}.get(o, [])  # fmt: skip
    for op in ops:
        img = img.transpose(op)
    return img


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(img, tmp_path / "cmyk.jpg", format="JPEG", quality=95)
    r, g, b = load_image(path).image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0
    path = _save(img, tmp_path / "p.png", transparency=0)
    got = load_image(path).image
    assert got.getpixel((5, 5)) == (255, 255, 255)
    assert got.getpixel((0, 0)) == (255, 0, 0)


def test_rgba_zero_alpha_is_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (10, 200, 30, 0))
    assert load_image(_save(img, tmp_path / "z.png")).image.getpixel((3, 3)) == (255, 255, 255)


def test_la_half_alpha_blends(tmp_path):
    img = Image.new("LA", (8, 8), (0, 128))
    v = load_image(_save(img, tmp_path / "la.png")).image.getpixel((1, 1))
    assert 120 <= v[0] <= 135 and v[0] == v[1] == v[2]


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 1000, 32768, 65535]], np.uint16).repeat(4, axis=0)
    img = Image.fromarray(arr)
    path = _save(img, tmp_path / "g16.png")
    got = np.asarray(load_image(path).image)[0, :, 0]
    assert list(got) == [0, 4, 128, 255]


def test_float_image_ranges():
    arr = np.array([[0.0, 0.5, 1.0]], np.float32)
    got = np.asarray(to_rgb(Image.fromarray(arr, "F")))[0, :, 0]
    assert list(got) == [0, 128, 255]
    wide = np.array([[-10.0, 0.0, 10.0]], np.float32)
    got = np.asarray(to_rgb(Image.fromarray(wide, "F")))[0, :, 0]
    assert list(got) == [0, 128, 255]


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = _save(Image.new("L", (4000, 4000)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="limit"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path, max_pixels=20_000_000).original_size == (4000, 4000)


def test_huge_declared_png_header_refused(tmp_path):
    # A valid PNG whose IHDR claims 100000 × 100000 pixels: refused from the header.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError, match="MP"):
        load_image(path)


@pytest.mark.parametrize("content,match", [(b"", "not an image"), (b"%PDF-1.4 hello", "not an image"),
                                           (os.urandom(2048), "not an image")])  # fmt: skip
def test_non_images(tmp_path, content, match):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=match) as err:
        load_image(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path, fmt):
    buf = io.BytesIO()
    _gradient(300, 200).save(buf, format=fmt)
    path = tmp_path / f"t.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated|corrupt"):
        load_image(path)


def test_missing_folder_and_permission(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    d = tmp_path / "dir.jpg"
    d.mkdir()
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(d)
    if sys.platform != "win32" and os.geteuid() != 0:
        p = _save(_gradient(), tmp_path / "locked.png")
        p.chmod(0)
        with pytest.raises(ImageLoadError, match="permission"):
            load_image(p)


def test_large_jpeg_uses_draft_and_reports_full_size(tmp_path):
    path = _save(_gradient(4000, 3000), tmp_path / "big.jpg", quality=90)
    got = load_image(path, min_size=(300, 224))
    assert got.original_size == (4000, 3000)
    assert got.image.width < 4000 and got.image.width >= 300 and got.image.height >= 224
    assert got.decode_scale == pytest.approx(got.image.width / 4000)


def test_fit_within_shrinks_in_proportion_and_never_enlarges():
    assert fit_within((6000, 4000), 2560) == (2560, 1707)
    assert fit_within((3000, 4000), 1000) == (750, 1000)
    assert fit_within((100, 50), 2560) == (100, 50)
    assert fit_within((1, 60000), 2560) == (1, 2560)


def test_draft_for_a_screen_copy_is_upright_and_the_same_picture(tmp_path):
    """The window's two decodes of one photo (EXIF-rotated): the model's draft and the copy
    for the screen are both upright, at least as large as asked, and the same picture as the
    full decode."""
    stored = _gradient(4000, 3000)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise: upright it is 3000 × 4000
    path = _save(stored, tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    full = load_image(path)
    assert full.original_size == (3000, 4000) and full.image.size == (3000, 4000) and not full.reduced
    for side in (1000, 300):
        got = load_image(path, min_size=lambda size, side=side: fit_within(size, side))
        want = fit_within((3000, 4000), side)
        assert got.reduced and got.original_size == (3000, 4000)
        assert want[0] <= got.image.width < 3000 and want[1] <= got.image.height < 4000
        assert got.image.width / got.image.height == pytest.approx(0.75, rel=0.01)
        small = np.asarray(full.image.resize(got.image.size, Image.Resampling.BOX)).astype(np.float32)
        drawn = np.asarray(got.image).astype(np.float32)
        assert np.abs(drawn - small).mean() < 3
        assert np.abs(drawn[::-1, ::-1] - small).mean() > 30  # the comparison can tell orientations apart


_BASE = io.BytesIO()
_gradient(48, 32).save(_BASE, format="PNG")
_BASE_JPEG = io.BytesIO()
_gradient(48, 32).save(_BASE_JPEG, format="JPEG")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from([_BASE.getvalue(), _BASE_JPEG.getvalue()]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_mutated_images_only_raise_typed_errors(tmp_path, base, edits, cut):
    data = bytearray(base)
    for pos, val in edits:
        data[pos % len(data)] = val
    data = data[: max(1, len(data) - cut % len(data))]
    path = tmp_path / "fuzz.img"
    path.write_bytes(bytes(data))
    try:
        got = load_image(path)
    except ImageLoadError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert got.image.mode == "RGB" and got.image.width > 0


def _png_with_text_chunk(kind: bytes, after_pixels: bool) -> bytes:
    """A red PNG with a 2 KB zTXt/iTXt chunk that inflates to 2 MB (Pillow's cap: 1 MB)."""
    import struct
    import zlib

    def chunk(k: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + k + data + struct.pack(">I", zlib.crc32(k + data))

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, "PNG")
    png = buf.getvalue()
    at = png.index(b"IDAT") - 4 if not after_pixels else len(png) - 12  # before IDAT / IEND
    flags = b"\x00" if kind == b"zTXt" else b"\x01\x00\x00\x00"
    text = chunk(kind, b"Comment\x00" + flags + zlib.compress(b"A" * (2 << 20), 9))
    return png[:at] + text + png[at:]


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
@pytest.mark.parametrize("after_pixels", [False, True])
def test_huge_text_chunk_is_a_plain_sentence(tmp_path, kind, after_pixels):
    path = tmp_path / "notes.png"
    path.write_bytes(_png_with_text_chunk(kind, after_pixels))
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert (
        str(err.value) == "notes.png: a text chunk in the PNG is too large to read (damaged or hostile file)"
    )


def test_decode_events_name_the_file_on_the_decoding_thread(tmp_path):
    import threading

    from vit_desktop.core.images import decoding_now, watch_decodes

    good = _save(_gradient(), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    seen = []

    def hook(name, started):
        seen.append((name, started, decoding_now(), threading.get_ident()))

    watch_decodes(hook)
    watch_decodes(hook)  # once is enough
    try:
        load_image(good)
        with pytest.raises(ImageLoadError):
            load_image(bad)
    finally:
        from vit_desktop.core import images

        images._decode_hooks.remove(hook)
    me = threading.get_ident()
    assert seen == [("good.png", True, "good.png", me), ("good.png", False, "good.png", me),
                    ("bad.png", True, "bad.png", me), ("bad.png", False, "bad.png", me)]  # fmt: skip
    assert decoding_now() is None
