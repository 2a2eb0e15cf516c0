"""Bad images: the loader, a fuzzer, and the command line on one folder full of them.

Every case comes from ``bad_images.build_all``; each either decodes to the right picture
or fails with one typed, one-line error naming the file — quickly, without leaking files.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import assert_one_clear_line, shown_name
from vit_desktop.core.catalog import get as catalog_entry
from vit_desktop.core.demo.shapes import CLASSES, generate
from vit_desktop.core.errors import ImageLoadError
from vit_desktop.core.images import LoadedImage, load_image
from vit_desktop.core.preprocess import prepare

from . import bad_images
from .bad_images import DROP_READ_OVERRIDE, Case, build_all, check_decoded, png_chunks

with tempfile.TemporaryDirectory() as _d:
    CASE_IDS = [c.id for c in build_all(Path(_d) / "cases")]

#: Words from inside the libraries that a person must never be shown.
LIBRARY_INSIDES = re.compile(r"ImagePlugin|_imaging|MAX_TEXT|\bPIL\b|[a-z]Error\b|b'")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    return {c.id: c for c in build_all(tmp_path_factory.mktemp("bad") / "cases")}


def _load_with_deadline(path: str, seconds: float = 20.0):
    """load_image on a thread, so a hang fails the test instead of freezing the suite."""
    out: dict = {}

    def go() -> None:
        try:
            out["value"] = load_image(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            out["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"load_image({path!r}) still running after {seconds} s"
    return out, time.monotonic() - start


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_loader_table(cases, case_id):
    case = cases[case_id]
    out, elapsed = _load_with_deadline(case.path)
    if case.error is None:
        assert "error" not in out, f"{case_id}: {out.get('error')!r}"
        got: LoadedImage = out["value"]
        check_decoded(case, got.image, got.original_size)
    else:
        assert "value" not in out, f"{case_id} decoded but should have been refused"
        err = out["error"]
        assert isinstance(err, ImageLoadError), f"{case_id}: untyped {type(err).__name__}: {err}"
        assert_one_clear_line(err.one_line(), case.path)
        assert re.search(case.error, err.one_line()), (case_id, err.one_line())
        assert not LIBRARY_INSIDES.search(err.one_line().split(": ", 1)[1]), err.one_line()
    assert elapsed < 10, f"{case_id} took {elapsed:.1f} s"


def test_bomb_is_tiny_on_disk_and_refused_from_the_header(cases):
    case = cases["bomb-png-30000x30000"]
    assert os.path.getsize(case.path) < 1024
    out, elapsed = _load_with_deadline(case.path)
    assert isinstance(out.get("error"), ImageLoadError) and re.search(r"900 MP.*limit", str(out["error"]))
    assert elapsed < 10  # nothing was decoded (a 900-megapixel decode takes far longer)


def test_postscript_renamed_jpg_never_reaches_ghostscript(cases, monkeypatch):
    """A PostScript file is a program; Pillow's EPS reader hands it to Ghostscript when one is
    installed.  Pretend one is, and prove the loader never asks."""
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs", raising=False)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    with Image.open(cases["postscript-as-jpg"].path) as im:  # Pillow alone would take it
        assert im.format == "EPS"
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(cases["postscript-as-jpg"].path)
    assert calls == []


def test_unreadable_file_is_one_clear_line(tmp_path):
    case = bad_images.unreadable(tmp_path)
    code = (
        "import sys\nfrom vit_desktop.core.images import load_image\nfrom vit_desktop.core.errors import "
        "ImageLoadError\ntry:\n    load_image(sys.argv[1])\nexcept ImageLoadError as e:\n    print(e.one_line())\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", DROP_READ_OVERRIDE, "-c", code, case.path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "secret.png: permission denied (the file cannot be read)"


def _open_fds() -> int:
    return len(os.listdir("/dev/fd"))


def test_loader_leaks_no_open_files(cases):
    for case in cases.values():  # warm up lazily imported plugins first
        try:
            load_image(case.path)
        except ImageLoadError:
            pass
    before = _open_fds()
    for _ in range(3):
        for case in cases.values():
            try:
                load_image(case.path)
            except ImageLoadError:
                pass
    assert _open_fds() == before


# -- fuzzing: valid images, mutated; only typed errors may come out ---------------------------


def _seed_images() -> dict[str, bytes]:
    base = bad_images.gradient(48, 32)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = {
        "png": bad_images._bytes(base, "PNG"),
        "png16": bad_images._bytes(
            Image.fromarray(np.arange(48 * 32, dtype=np.uint16).reshape(32, 48) * 40), "PNG"
        ),
        "png-palette": bad_images._bytes(base.convert("P"), "PNG", transparency=3),
        "jpeg": bad_images._bytes(base, "JPEG", quality=80, exif=exif),
        "jpeg-progressive": bad_images._bytes(base, "JPEG", progressive=True),
        "cmyk": bad_images._bytes(base.convert("CMYK"), "JPEG"),
        "gif": bad_images._animated("GIF", "gif"),
        "webp": bad_images._bytes(base, "WEBP", quality=70),
        "webp-anim": bad_images._animated("WEBP", "webp"),
        "tiff": bad_images._animated("TIFF", "tif"),
        "bmp": bad_images._bytes(base, "BMP"),
        "ico": bad_images._bytes(base, "ICO"),
    }
    return out


SEEDS = _seed_images()
DEMO_PRE = catalog_entry("demo-shapes").preprocessing


@st.composite
def mutated_image(draw) -> bytes:
    kind = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[kind])
    if kind.startswith("png") and draw(st.booleans()):
        # Structure-aware: change a chunk's bytes and fix its CRC, so the decoder believes it.
        chunks = png_chunks(bytes(data))
        i = draw(st.integers(0, len(chunks) - 1))
        kind_b, body = chunks[i]
        body = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            if body:
                body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            chunks.insert(i, chunks[i])  # a duplicated chunk (two IHDRs, two PLTEs…)
        chunks[i] = (kind_b, bytes(body))
        return b"\x89PNG\r\n\x1a\n" + b"".join(bad_images.png_chunk(k, b) for k, b in chunks)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "insert", "delete", "copy"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "copy" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[pos:pos] = data[start : start + draw(st.integers(1, 256))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated_image())
def test_fuzzed_images_give_a_picture_or_a_typed_error(tmp_path, data):
    path = tmp_path / "fuzz.jpg"
    path.write_bytes(data)
    try:
        got = load_image(path, max_pixels=4_000_000, min_size=DEMO_PRE.resized_size)
    except ImageLoadError as exc:
        assert_one_clear_line(exc.one_line(), str(path))
        assert not LIBRARY_INSIDES.search(exc.one_line().split(": ", 1)[1]), exc.one_line()
        return
    assert got.image.mode == "RGB" and got.image.width >= 1 and got.image.height >= 1
    w, h = got.original_size
    assert 1 <= w * h <= 4_000_000
    arr, geom = prepare(got.image, DEMO_PRE, got.original_size)  # the rest of the input path
    assert arr.shape == (3, *DEMO_PRE.input_size) and np.isfinite(arr).all()
    assert geom.original_size == got.original_size


# -- the command line on one folder of all of it, among good pictures --------------------------


def _good_shapes(folder: Path, n: int = 6) -> dict[str, str]:
    rng = np.random.default_rng(11)
    truth = {}
    for i in range(n):
        s = generate(rng, label=i % len(CLASSES), size=(320, 200))
        path = folder / f"good_{i:02d}_{s.name}.{'jpg' if i % 2 else 'png'}"
        s.image.save(path, quality=95)
        truth[str(path)] = s.name
    return truth


def test_command_line_on_a_folder_of_everything(tmp_path):
    from vit_desktop.core.text import json_safe

    folder = tmp_path / "drop"
    cases = build_all(folder)
    cases.append(bad_images.unreadable(folder))
    truth = _good_shapes(folder)
    inside = folder / "album.jpg" / "inside.png"  # a folder named like a photo is walked
    generate(np.random.default_rng(5), label=8, size=(200, 200)).image.save(inside)
    truth[str(inside)] = "star"
    # Many good files with one broken among them (hard links: cheap to make).
    many = folder / "many"
    many.mkdir()
    first = many / "copy_00000.png"
    copy_sample = generate(np.random.default_rng(6), label=4, size=(160, 120))
    copy_sample.image.save(first)
    for i in range(1, 200):
        os.link(first, many / f"copy_{i:05d}.png")
    (many / "copy_00300_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    os.symlink("..", many / "back-to-top")  # a loop in the folder tree
    start = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            DROP_READ_OVERRIDE,
            "-m",
            "vit_desktop",
            "classify",
            str(folder),
            "--recursive",
            "--format",
            "json",
            "--model",
            "demo-shapes",
            "--batch-size",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - start
    assert r.returncode == 1, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    assert all(len(v) == 1 for v in by_path.values()), "a file was reported twice (the loop was followed)"
    err_lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    bad = [c for c in cases if c.error is not None and c.in_folder]
    assert len(err_lines) == len(bad) + 1, "\n".join(err_lines)  # +1: the broken copy among the many
    for c in cases:
        shown = json_safe(c.path)
        if not c.in_folder:
            assert shown not in by_path
            continue
        (row,) = by_path[shown]
        if c.error is None:
            assert "top_k" in row and row["image_size"] == list(c.size), (c.id, row)
        else:
            assert "error" in row, (c.id, row)
            mine = [ln for ln in err_lines if shown_name(c.path) in ln]
            assert len(mine) == 1, (c.id, err_lines)
    for path, label in truth.items():
        (row,) = by_path[path]
        assert row["top_k"][0]["label"] == label, (path, row["top_k"][0])
    copies = [row for p, (row,) in by_path.items() if "/many/copy_" in p]
    assert len(copies) == 201
    assert sum("error" in row for row in copies) == 1
    assert {row["top_k"][0]["label"] for row in copies if "error" not in row} == {copy_sample.name}
    assert elapsed < 120


def test_hand_written_bomb_header_is_what_decoders_read():
    # The bomb above is only meaningful if a decoder reads the declared size from it.
    with Image.open(io.BytesIO(bad_images.declared_png(300, 200))) as im:
        assert im.size == (300, 200) and im.format == "PNG"


def test_walk_of_twenty_thousand_files_lists_each_once(tmp_path):
    """The folder walk at full scale: 20,000 files, one broken, one symlink loop, one folder
    named like a photo: every image-named file listed exactly once, nothing followed twice."""
    from vit_desktop.core.paths import iter_image_paths

    folder = tmp_path / "big"
    (folder / "sub").mkdir(parents=True)
    first = folder / "p00000.png"
    Image.new("RGB", (8, 8), bad_images.RED).save(first)
    for i in range(1, 20_000):
        os.link(first, folder / ("sub" if i % 2 else "") / f"p{i:05d}.png")
    (folder / "sub" / "broken.jpg").write_bytes(b"nope")
    os.symlink("..", folder / "sub" / "up")
    os.symlink("self.jpg", folder / "self.jpg")
    (folder / "x.jpg").mkdir()
    listed = list(iter_image_paths([str(folder)], recursive=True))
    assert len(listed) == len(set(listed)) == 20_000 + 2  # + broken.jpg + the looping self.jpg
    assert str(folder / "sub" / "broken.jpg") in listed and str(folder / "self.jpg") in listed


@pytest.mark.parametrize("kind", sorted(bad_images.broken_pngs()))
def test_the_broken_pngs_are_refused_by_pillow_itself(kind):
    # The loader's refusal is only right if Pillow's own decode refuses them too (it opens
    # them fine: the damage is found while decoding).
    data = bad_images.broken_pngs()[kind]
    if kind != "text-bomb":
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG"
    with pytest.raises((OSError, SyntaxError, ValueError)), Image.open(io.BytesIO(data)) as im:
        im.load()
