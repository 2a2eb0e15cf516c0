"""Every awkward file people drop on the app, generated on the spot (nothing stored).

``build_all(folder)`` writes each case and returns ``Case`` records: the file's path and
either a check for the decoded image (``ok``) or a pattern the one-line error must match.
The same set feeds the loader table, the command line and the window.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    error: str | None = None  # regex the one-line error must match; None: it must decode
    size: tuple[int, int] | None = None  # upright (width, height) it must decode to
    colour: tuple[int, int, int] | None = None  # colour at the centre after decoding
    in_folder: bool = True  # found by a folder walk (an image extension on a file)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, data) pairs, in file order."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return chunks


def png_of(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG made of ``chunks``, each with a correct CRC (so a decoder believes it)."""
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, data) for kind, data in chunks)


def broken_pngs() -> dict[str, bytes]:
    """PNGs that Pillow's own ``load()`` refuses, though opening them and reading their
    header works (the loader once returned a picture for the first three)."""
    red = png_chunks(_bytes(Image.new("RGB", (30, 20), RED), "PNG"))
    *body, iend = red
    # A text chunk after the pixels, cut off in the middle: no IEND.
    cut = png_of([*body, (b"tEXt", b"Comment\x00" + b"x" * 200)])[:-120]
    # Pixel data that is not a zlib stream at all (its chunk CRC is right).
    at = next(i for i, (kind, _) in enumerate(red) if kind == b"IDAT")
    idat = bytearray(red[at][1])
    idat[0] ^= 0xFF  # the zlib header
    bad_zlib = png_of([*red[:at], (b"IDAT", bytes(idat)), *red[at + 1 :]])
    # An animated PNG with its second frame-control chunk gone: frame data out of sequence.
    anim = png_chunks(_animated("PNG", "png"))
    second = [i for i, (kind, _) in enumerate(anim) if kind == b"fcTL"][1]
    out_of_sequence = png_of(anim[:second] + anim[second + 1 :])
    # A zTXt chunk of 2 KB that inflates past Pillow's 1 MB cap on text (a text bomb).
    bomb = zlib.compress(b"A" * (2 << 20), 9)
    text_bomb = png_of([*body, (b"zTXt", b"Comment\x00\x00" + bomb), iend])
    return {"cut": cut, "bad-zlib": bad_zlib, "out-of-sequence": out_of_sequence, "text-bomb": text_bomb}


def declared_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` × ``height`` RGB pixels (a bomb's shape:
    a few hundred bytes on disk, gigabytes once decoded).  Written by hand: Pillow is never
    asked to allocate it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 96, h: int = 64) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], 2).astype(np.uint8), "RGB")


def ycck_jpeg(cmyk_wanted: tuple[int, int, int, int] = (0, 255, 255, 0)) -> bytes:
    """A YCCK JPEG (Adobe transform 2, as some print workflows write) of one colour.

    Pillow cannot write YCCK, so the CMYK encoder is given the YCC values of the wanted
    colour and the Adobe marker's transform byte is switched from 0 (CMYK) to 2 (YCCK):
    a decoder that honours the marker sees ``cmyk_wanted``."""
    c, m, y, k = cmyk_wanted
    # libjpeg turns YCC into RGB and that into C = 255 - R …, which Pillow reads inverted
    # (Adobe CMYK): Pillow's C is the R the YCC values encode.
    r, g, b = c, m, y
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    stored = [round(v) for v in (luma, cb, cr)] + [255 - k]
    values = tuple(255 - min(255, max(0, v)) for v in stored)  # Pillow writes CMYK inverted
    data = bytearray(_bytes(Image.new("CMYK", (24, 16), values), "JPEG", quality=100))
    at = data.find(b"Adobe")
    assert at > 0 and data[at + 11] == 0, "expected an Adobe APP14 marker with transform 0"
    data[at + 11] = 2
    return bytes(data)


def _write(folder: Path, name: str | bytes, data: bytes) -> str:
    path = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else str(folder / name)
    with open(path, "wb") as f:
        f.write(data)
    return os.fsdecode(path)


def _animated(fmt: str, ext: str) -> bytes:
    frames = [Image.new("RGB", (40, 20), c) for c in (RED, (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


def build_all(folder: Path) -> list[Case]:
    """Write every case into ``folder`` and describe what must happen to each."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(case_id: str, name: str | bytes, data: bytes, **kw) -> None:
        cases.append(Case(case_id, _write(folder, name, data), **kw))

    jpeg = _bytes(gradient(300, 200), "JPEG", quality=90)
    png = _bytes(gradient(300, 200), "PNG")
    # -- not images at all ---------------------------------------------------------------
    add("empty", "empty.jpg", b"", error="empty")
    add("random-bytes", "random.jpg", np.random.default_rng(1).bytes(4096), error="not an image")
    add("text-as-png", "notes.png", b"Shopping list\nmilk\neggs\n", error="not an image")
    add(
        "pdf-as-png",
        "scan.png",
        b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\ntrailer <<>>\n%%EOF\n",
        error="not an image",
    )
    add(
        "postscript-as-jpg",
        "poster.jpg",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n(pwned) print showpage\n",
        error="not an image",
    )
    # -- damaged images ------------------------------------------------------------------
    add("truncated-jpeg", "half.jpg", jpeg[: len(jpeg) // 2], error="truncated|corrupt")
    add("truncated-png", "half.png", png[: len(png) // 2], error="truncated|corrupt")
    exif = Image.Exif()
    exif[0x0112] = 6
    phone = _bytes(gradient(640, 480), "JPEG", quality=85, exif=exif)
    add("truncated-phone-photo", "IMG_0001.jpg", phone[: len(phone) * 2 // 3], error="truncated|corrupt")
    bad_ihdr = bytearray(png)
    bad_ihdr[29] ^= 0xFF  # the IHDR chunk's CRC
    add("png-bad-header-crc", "badcrc.png", bytes(bad_ihdr), error="not an image|corrupt")
    # An IDAT CRC is not checked by decoders (zlib's own checksum guards the pixels): the
    # picture comes out intact.
    small = _bytes(Image.new("RGB", (30, 20), RED), "PNG")
    bad_idat = bytearray(small)
    bad_idat[-13] ^= 0xFF  # the last byte of the IDAT CRC (IEND's 12 bytes follow)
    add("png-bad-data-crc", "badcrc-data.png", bytes(bad_idat), size=(30, 20), colour=RED)
    # Refused by Pillow's load() itself; once returned as pictures (the decode error was lost
    # while the EXIF was looked for).
    broken = broken_pngs()
    add("png-truncated-end-chunk", "no-end.png", broken["cut"], error="corrupt.*truncated")
    add("png-corrupt-zlib", "bad-zlib.png", broken["bad-zlib"], error="corrupt.*picture data is damaged")
    add("apng-frame-sequence-error", "frames.png", broken["out-of-sequence"], error="corrupt.*frames")
    add(
        "png-text-chunk-bomb",
        "text-bomb.png",
        broken["text-bomb"],
        error="text chunk in the PNG is too large",
    )
    # -- decompression bombs: refused from the header -------------------------------------
    add("bomb-png-30000x30000", "huge.png", declared_png(30_000, 30_000), error="MP.*limit")
    gif_bomb = (
        b"GIF89a"
        + struct.pack("<HH", 65535, 65535)
        + b"\x00\x00\x00"
        + b","
        + struct.pack("<HHHH", 0, 0, 65535, 65535)
        + b"\x00\x02\x02D\x01\x00;"
    )
    add("bomb-gif-65535x65535", "huge.gif", gif_bomb, error="MP.*limit")
    # -- odd but valid -------------------------------------------------------------------
    add("1x1", "dot.png", _bytes(Image.new("RGB", (1, 1), RED), "PNG"), size=(1, 1), colour=RED)
    add(
        "1x10000",
        "thread.png",
        _bytes(Image.new("RGB", (1, 10_000), RED), "PNG"),
        size=(1, 10_000),
        colour=RED,
    )
    add(
        "10000x1", "line.png", _bytes(Image.new("RGB", (10_000, 1), RED), "PNG"), size=(10_000, 1), colour=RED
    )
    add(
        "cmyk-jpeg",
        "print.jpg",
        _bytes(Image.new("CMYK", (24, 16), (0, 255, 255, 0)), "JPEG", quality=100),
        size=(24, 16),
        colour=RED,
    )
    add("ycck-jpeg", "ycck.jpg", ycck_jpeg(), size=(24, 16), colour=RED)
    grey16 = Image.fromarray(np.full((16, 24), 32768, np.uint16))
    add("16-bit-grey-png", "grey16.png", _bytes(grey16, "PNG"), size=(24, 16), colour=(128, 128, 128))
    pal = Image.new("P", (24, 16), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (8, 4, 16, 12))
    add(
        "palette-png-transparency",
        "palette.png",
        _bytes(pal, "PNG", transparency=0),
        size=(24, 16),
        colour=RED,
    )
    add(
        "rgba-zero-alpha",
        "ghost.png",
        _bytes(Image.new("RGBA", (24, 16), (10, 200, 30, 0)), "PNG"),
        size=(24, 16),
        colour=(255, 255, 255),
    )
    for o in range(1, 9):
        # A 40×20 picture with a red left half; EXIF says how to turn it upright.
        arr = np.zeros((20, 40, 3), np.uint8)
        arr[:, :20] = RED
        ex = Image.Exif()
        ex[0x0112] = o
        upright = (40, 20) if o <= 4 else (20, 40)
        add(
            f"exif-orientation-{o}",
            f"orient{o}.jpg",
            _bytes(Image.fromarray(arr), "JPEG", quality=95, exif=ex),
            size=upright,
        )
    add("animated-gif", "anim.gif", _animated("GIF", "gif"), size=(40, 20), colour=RED)
    add("animated-webp", "anim.webp", _animated("WEBP", "webp"), size=(40, 20), colour=RED)
    add("animated-png", "anim.png", _animated("PNG", "png"), size=(40, 20), colour=RED)
    add("multi-page-tiff", "pages.tif", _animated("TIFF", "tif"), size=(40, 20), colour=RED)
    # -- names -----------------------------------------------------------------------------
    red_png = _bytes(Image.new("RGB", (24, 16), RED), "PNG")
    add("very-long-name", "x" * 246 + ".png", red_png, size=(24, 16), colour=RED)
    add("newline-in-name", "two\nlines.png", b"not really a png", error="not an image")
    add("spaces-and-emoji-name", "holiday 🌅 photo.png", red_png, size=(24, 16), colour=RED)
    if sys.platform != "win32" and sys.platform != "darwin":  # names that are not UTF-8: POSIX only
        add("non-utf8-name", b"caf\xe9.png", red_png, size=(24, 16), colour=RED)
        add("non-utf8-name-broken", b"bro\xefken.jpg", b"not a jpeg", error="not an image")
    # -- things that are not files ----------------------------------------------------------
    d = folder / "album.jpg"
    d.mkdir()
    cases.append(Case("directory-named-jpg", str(d), error="folder", in_folder=False))
    if hasattr(os, "mkfifo"):
        fifo = folder / "stream.jpg"
        os.mkfifo(fifo)
        cases.append(Case("fifo-named-jpg", str(fifo), error="pipe"))
    if hasattr(os, "symlink"):
        loop = folder / "loop.jpg"
        os.symlink(loop.name, loop)  # points at itself
        cases.append(Case("symlink-loop-file", str(loop), error="loops"))
        dangling = folder / "gone.png"
        os.symlink("deleted-long-ago.png", dangling)
        cases.append(Case("dangling-symlink", str(dangling), error="does not exist"))
    return cases


def unreadable(folder: Path) -> Case:
    """A real image its reader may not open (mode 000)."""
    path = folder / "secret.png"
    Image.new("RGB", (24, 16), RED).save(path)
    path.chmod(0)
    return Case("unreadable", str(path), error="permission denied")


def check_decoded(case: Case, image: Image.Image, original_size: tuple[int, int]) -> None:
    assert image.mode == "RGB", case.id
    if case.size is not None:
        assert original_size == case.size, (case.id, original_size)
        assert image.size == case.size, (case.id, image.size)
    if case.colour is not None:
        px = image.getpixel((image.width // 2, image.height // 2))
        assert max(abs(a - b) for a, b in zip(px, case.colour)) <= 12, (case.id, px, case.colour)


#: Drop-privileges prefix for a child Python: on Linux as root, the child gives up the right
#: to read other people's files (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) before it starts, so
#: a mode-000 file is really unreadable to it, as it is to everyone else.
DROP_READ_OVERRIDE = (
    "import ctypes, os, sys\n"
    "if sys.platform == 'linux' and os.geteuid() == 0:\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    for cap in (1, 2):\n"
    "        if libc.prctl(24, cap, 0, 0, 0) != 0:\n"  # PR_CAPBSET_DROP
    "            raise SystemExit('cannot drop capability %d' % cap)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)

Checker = Callable[[Case, Image.Image, tuple[int, int]], None]
