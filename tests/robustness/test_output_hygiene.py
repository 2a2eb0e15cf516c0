"""The terminal belongs to our own lines: one stderr line per failed file, nothing else.

C libraries write straight to file descriptor 2 (libtiff: "Fax4Decode: Bad code word …",
even for TIFFs that then decode) and Pillow's logger reports errors through Python's last
resort; both must land in the log file, tagged with the file being decoded.  Every file is
generated here; each test runs a real child process (descriptor 2 is per process).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from vit_desktop.core.demo.shapes import generate

pytestmark = pytest.mark.skipif(not features.check("libtiff"), reason="Pillow built without libtiff")

_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def _tiff_tags(data: bytes) -> dict[int, tuple[int, int]]:
    """tag → (offset of its value field, value) for a little-endian TIFF's first IFD."""
    (at,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[at : at + 2])
    tags = {}
    for i in range(n):
        entry = at + 2 + 12 * i
        tag, kind, _count, value = struct.unpack("<HHII", data[entry : entry + 12])
        tags[tag] = (entry + 8, value & 0xFFFF if kind == 3 else value)
    return tags


def fax_tiff(size=(96, 64), every: int = 7) -> bytearray:
    """A CCITT Group 4 TIFF (one strip) whose coded data is damaged every ``every`` bytes:
    libtiff complains on stderr and still decodes it."""
    bits = np.random.default_rng(0).random(size[::-1]) > 0.5
    buf = io.BytesIO()
    Image.fromarray(bits).convert("1").save(buf, "TIFF", compression="group4")
    data = bytearray(buf.getvalue())
    tags = _tiff_tags(data)
    start, length = tags[273][1], tags[279][1]
    for i in range(start + 10, start + length, every):
        data[i] ^= 0x5A
    return data


def fax_tiff_cut_short() -> bytes:
    """A Group 4 TIFF that says its strip is 1 MB long: libtiff reports a read error."""
    data = fax_tiff(every=10**9)
    field, _ = _tiff_tags(data)[279]
    data[field : field + 4] = struct.pack("<I", 1_000_000)
    return bytes(data)


def lzw_tiff_damaged() -> bytes:
    """An LZW TIFF with damaged codes: libtiff says "Using code not yet in table"."""
    pixels = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "TIFF", compression="tiff_lzw")
    data = bytearray(buf.getvalue())
    start, length = (_tiff_tags(data)[t][1] for t in (273, 279))
    for i in range(start + 2, start + length, 11):
        data[i] ^= 0xA5
    return bytes(data)


def too_many_samples_tiff() -> bytes:
    """A hand-written TIFF claiming 60,000 samples per pixel: Pillow logs an error (through
    Python's logging) and refuses it."""
    entries = [(256, 8), (257, 8), (258, 8), (259, 1), (262, 2), (273, 8), (277, 60_000), (278, 8), (279, 64)]
    ifd = struct.pack("<H", len(entries))
    for tag, value in entries:
        kind = 4 if tag in (273, 279) else 3
        field = struct.pack("<I", value) if kind == 4 else struct.pack("<H", value) + b"\0\0"
        ifd += struct.pack("<HHI", tag, kind, 1) + field
    return b"II*\0" + struct.pack("<I", 8 + 64) + b"\0" * 64 + ifd + b"\0\0\0\0"


def _child(code: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _log_lines() -> list[str]:
    path = Path(os.environ["VIT_DESKTOP_LOG_DIR"]) / "vit-desktop.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture
def tiffs(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "scans"
    folder.mkdir()
    made = {
        "fax-chatty.tif": bytes(fax_tiff()),
        "fax-cut.tif": fax_tiff_cut_short(),
        "lzw-broken.tif": lzw_tiff_damaged(),
        "samples.tif": too_many_samples_tiff(),
    }
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in made}


def test_the_broken_tiffs_really_make_the_libraries_talk(tiffs):
    # Without the routing, each of these writes to stderr: the tests below mean something.
    code = """
        import sys
        from vit_desktop.core.images import load_image
        from vit_desktop.core.errors import ImageLoadError
        try:
            load_image(sys.argv[1])
        except ImageLoadError:
            pass
    """
    for name in tiffs:
        r = _child(code, str(tiffs[name]))
        assert r.returncode == 0 and r.stderr.strip(), (name, r.stderr)
    assert "Fax4Decode" in _child(code, str(tiffs["fax-chatty.tif"])).stderr
    assert "More samples per pixel" in _child(code, str(tiffs["samples.tif"])).stderr


def test_command_line_stderr_is_one_line_per_failed_file(tmp_path, tiffs):
    folder = tiffs["samples.tif"].parent
    for i in range(3):
        generate(np.random.default_rng(i), label=i, size=(200, 160)).image.save(folder / f"good{i}.png")
    r = subprocess.run(
        [sys.executable, "-m", "vit_desktop", "classify", str(folder), "--model", "demo-shapes",
         "--format", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    rows = {Path(row["path"]).name: row for row in map(json.loads, r.stdout.splitlines())}
    assert set(rows) == {*tiffs, "good0.png", "good1.png", "good2.png"}
    failed = sorted(name for name, row in rows.items() if "error" in row)
    assert failed == ["fax-cut.tif", "lzw-broken.tif", "samples.tif"]  # fax-chatty decodes
    lines = r.stderr.splitlines()
    assert len(lines) == len(failed), r.stderr
    for line, name in zip(sorted(lines), failed):
        assert line.startswith(f"vit-desktop: {folder / name}: "), line
    log = _log_lines()
    assert all(_STAMP.match(line) or line.startswith("    ") for line in log), log
    said = "\n".join(log)
    assert re.search(r"Fax4Decode: .*\(while decoding fax-chatty\.tif\)", said), said
    assert re.search(r"Read error on strip .*\(while decoding fax-cut\.tif\)", said), said
    assert re.search(r"Using code not yet in table.*\(while decoding lzw-broken\.tif\)", said), said
    assert re.search(r"ERROR PIL\.\S+: More samples per pixel .*\(while decoding samples\.tif\)", said), said


def _routed(code: str) -> str:
    """``code`` run after the routing is switched on (twice: the second call does nothing)."""
    start = """
        import logging, os, sys
        from vit_desktop.logs import keep_terminal_for_our_lines
        assert keep_terminal_for_our_lines() is True
        assert keep_terminal_for_our_lines() is True
    """
    return textwrap.dedent(start) + textwrap.dedent(code)


def test_descriptor_two_goes_to_the_log_and_sys_stderr_to_the_terminal():
    r = _child(
        _routed("""
        print("vit-desktop: our own line", file=sys.stderr)
        os.write(2, b"a C library speaks\\n")
        os.write(2, b"half a line, ")
        os.write(2, b"then the rest\\n")
        logging.getLogger("some.library").error("a library's logger: %s", "boom")
        sys.__stderr__.write("Python's own stderr object\\n")
        sys.__stderr__.flush()
        os.write(2, b"last words, no newline")
    """)
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "vit-desktop: our own line\n"
    said = "\n".join(_log_lines())
    for text in ("a C library speaks", "half a line, then the rest", "a library's logger: boom",
                 "Python's own stderr object", "last words, no newline"):  # fmt: skip
        assert text in said, (text, said)
    assert "while decoding" not in said  # nothing was being decoded


def test_a_chatty_decode_is_summed_up_not_logged_line_by_line(tmp_path):
    """Sixty lines written to descriptor 2 while one file decodes (by a listener of the
    loader's own decode events, as a C library would): twenty are logged, then a count."""
    path = tmp_path / "chatty.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    r = _child(
        _routed("""
        from vit_desktop.core.images import load_image, watch_decodes
        def chatter(name, started):
            if started:
                for i in range(60):
                    os.write(2, b"codec: complaint %d\\n" % i)
        watch_decodes(chatter)
        load_image(sys.argv[1])
        os.write(2, b"after the decode\\n")
    """),
        str(path),
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    log = _log_lines()
    complaints = [line for line in log if "codec: complaint" in line]
    assert len(complaints) == 20 and all(line.endswith("(while decoding chatty.png)") for line in complaints)
    assert any("40 more lines like these (while decoding chatty.png)" in line for line in log), log
    (after,) = [line for line in log if "after the decode" in line]
    assert "while decoding" not in after


@pytest.mark.parametrize(
    "setup",
    ["sys.stderr = None", "import io; sys.stderr = io.StringIO()",
     "from vit_desktop.logs import ensure_std_streams; sys.stderr = None; ensure_std_streams()"],
)  # fmt: skip
def test_no_real_stderr_leaves_descriptor_two_alone(setup):
    r = _child(f"""
        import os, sys
        before = os.fstat(2)
        {setup}
        from vit_desktop.logs import keep_terminal_for_our_lines
        routed = keep_terminal_for_our_lines()
        after = os.fstat(2)
        os.write(1, b"routed=%d same=%d" % (routed, (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev)))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "routed=0 same=1"


def test_under_pytest_capture_it_does_nothing():
    from vit_desktop.logs import keep_terminal_for_our_lines

    try:
        real = sys.stderr.fileno() == 2
    except (OSError, ValueError):
        real = False  # capture without a descriptor (capsys)
    if real:
        pytest.skip("stderr is not captured in this run (-s): routing it would take pytest's")
    before = os.fstat(2)
    assert keep_terminal_for_our_lines() is False
    after = os.fstat(2)
    assert (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev)
