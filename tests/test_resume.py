"""Resuming a JSON-lines output, and the command line's sources (folders, list files, globs).

A run of the local engine is killed half-way (a real process, SIGKILL), a torn last line is
left behind as a crash mid-write would leave it, and ``--resume`` finishes the job: every
image has exactly one record, and the records are the engine's own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import shape_file
from vit_desktop.core.export import ResultWriter, open_append, read_done
from vit_desktop.core.paths import iter_sources


def _cli(*args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "vit_desktop", "classify", *args]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the output file -----------------------------------------------------------------------


def test_a_torn_last_line_is_not_trusted_and_is_cut_before_writing_on(tmp_path):
    out = tmp_path / "out.jsonl"
    with out.open("w", encoding="utf-8") as f:
        w = ResultWriter("json", f)
        w.write({"path": "a.png", "top_k": []})
        w.write({"path": "b.png", "error": "b.png: not an image"})
        w.write({"path": "a.png", "top_k": []})  # a second record for a path: one path done
        f.write('{"path": "c.png", "top_k": [{"lab')  # what a crash mid-line leaves
    done = read_done(out)
    assert done.paths == {"a.png", "b.png"} and done.failed == 1 and done.unreadable == 1
    assert done.has("b.png") and not done.has("c.png")
    with open_append(out) as f:
        ResultWriter("json", f, sync_s=0).write({"path": "c.png", "top_k": []})
    assert [r["path"] for r in _records(out)] == ["a.png", "b.png", "a.png", "c.png"]
    assert read_done(out).unreadable == 0
    assert read_done(tmp_path / "missing.jsonl").paths == set()


def test_a_name_whose_bytes_are_not_utf8_is_found_again(tmp_path):
    name = str(tmp_path / os.fsdecode(b"caf\xe9.png"))
    out = tmp_path / "out.jsonl"
    with out.open("w", encoding="utf-8", errors="backslashreplace") as f:
        ResultWriter("json", f).write({"path": name, "error": "x"})
    done = read_done(out)
    assert done.has(name) and not done.has(str(tmp_path / "café.png"))


# -- sources -------------------------------------------------------------------------------


def test_sources_are_folders_list_files_and_globs(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for rel in ("a.png", "b.jpg", "notes.md", "sub/c.png", "sub/d.webp"):
        (photos / rel).write_bytes(b"x")
    odd = photos / "[odd].png"  # a real name with glob characters is itself, not a pattern
    odd.write_bytes(b"x")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "todo.txt").write_text(
        f"# made by find\n../photos/a.png\n\n{photos / 'sub' / 'c.png'}\r\n../photos/sub\nmissing.png\n"
    )
    assert list(iter_sources([str(lists / "todo.txt")])) == [
        os.path.join(str(lists), "../photos/a.png"),
        str(photos / "sub" / "c.png"),
        os.path.join(str(lists), "../photos/sub", "c.png"),
        os.path.join(str(lists), "../photos/sub", "d.webp"),
        os.path.join(str(lists), "missing.png"),  # the loader will say it is missing
    ]
    pattern = str(photos / "**" / "*.png")
    assert sorted(iter_sources([pattern])) == sorted(
        map(str, [photos / "a.png", odd, photos / "sub" / "c.png"])
    )
    assert list(iter_sources([str(photos / "*.nothing")])) == []
    assert list(iter_sources([str(odd)])) == [str(odd)]
    walked = list(iter_sources([str(photos)], recursive=True))
    assert walked == [str(photos / n) for n in ("[odd].png", "a.png", "b.jpg", "sub/c.png", "sub/d.webp")]


def test_a_long_list_file_is_streamed(tmp_path):
    lst = tmp_path / "many.txt"
    with lst.open("w") as f:
        f.writelines(f"img{i:07d}.jpg\n" for i in range(50_000))
    it = iter_sources([str(lst)])
    assert next(it) == str(tmp_path / "img0000000.jpg")
    with lst.open("a") as f:  # read as it is used: a line added now is still listed
        f.write("late.jpg\n")
    *_, last = it
    assert last == str(tmp_path / "late.jpg")


# -- the local engine, killed and resumed ---------------------------------------------------------


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    images = [str(shape_file(d, label=i % 10, size=(96 + i % 5 * 16, 72), seed=i)[0]) for i in range(40)]
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "empty.jpg").write_bytes(b"")
    listing = d / "todo.txt"  # a list file as the SOURCE, relative names
    listing.write_text("".join(f"{os.path.basename(p)}\n" for p in [*images, "broken.png", "empty.jpg"]))
    return d, listing, len(images) + 2


def test_a_killed_local_run_resumed_classifies_every_image_once(job):
    d, listing, total = job
    out = d / "out.jsonl"
    args = [str(listing), "--model", "demo-shapes", "--batch-size", "2", "--output", str(out)]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed half-way"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    first = out.read_bytes().count(b"\n")
    assert 6 <= first < total
    with out.open("a", encoding="utf-8") as f:  # a crash in the middle of a line
        f.write('{"path": "' + str(d / "torn"))

    r = subprocess.run(_cli(*args, "--resume"), capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, r.stderr  # the broken files
    assert f"resuming: {first} images already in" in r.stderr
    rows = _records(out)  # every line whole: the torn one was cut
    counts = Counter(x["path"] for x in rows)
    assert len(rows) == total and set(counts.values()) == {1}
    assert set(counts) == {os.path.join(str(d), line) for line in listing.read_text().split()}
    failed = {os.path.basename(x["path"]) for x in rows if "error" in x}
    assert failed == {"broken.png", "empty.jpg"}

    from vit_desktop.core.classifier import load_classifier

    clf = load_classifier("demo-shapes")  # the same images in one uninterrupted run
    ref = {res.source: res.to_dict() for res in clf.iter_classify(sorted(counts), 8, 5, "peak")}
    for x in rows:
        want = ref[x["path"]]
        assert set(x) == set(want)
        if "error" in x:
            assert x == want
            continue
        assert [p["label"] for p in x["top_k"]] == [p["label"] for p in want["top_k"]]
        assert max(abs(p["prob"] - q["prob"]) for p, q in zip(x["top_k"], want["top_k"])) <= 1e-5
        assert x["image_size"] == want["image_size"] and x["attention_peak"] == want["attention_peak"]

    again = subprocess.run(_cli(*args, "--resume"), capture_output=True, text=True, timeout=180)
    assert again.returncode == 1  # the output still holds two failures
    assert f"nothing left to classify: {total} images already in" in again.stderr
    assert out.read_bytes().count(b"\n") == total


def test_resume_needs_a_json_lines_output(tmp_path):
    img = shape_file(tmp_path, 1, size=(64, 64))[0]
    for extra in ([], ["--output", str(tmp_path / "out.csv"), "--format", "csv"]):
        r = subprocess.run(_cli(str(img), "--resume", *extra), capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "--resume needs --output FILE with JSON lines" in r.stderr


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path):
    import errno

    from vit_desktop.core.export import OutputError, ResultWriter

    class FillsUp:
        """A stream on a disk with room for two lines."""

        def __init__(self):
            self.lines = []

        def write(self, text):
            if len(self.lines) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.lines.append(text)

        def flush(self):
            pass

    stream = FillsUp()
    w = ResultWriter("json", stream)
    w.write({"path": "a.png", "error": "x"})
    w.write({"path": "b.png", "error": "y"})
    with pytest.raises(OutputError, match="No space left on device.*2 records written before"):
        w.write({"path": "c.png", "error": "z"})
    assert [json.loads(line)["path"] for line in stream.lines] == ["a.png", "b.png"]


def test_resuming_with_another_model_is_refused_in_one_line(tmp_path):
    from vit_desktop.core.export import OutputError

    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"path": "a.png", "model": "vit-b-16", "top_k": []}) + "\n"
                   + json.dumps({"path": "b.png", "error": "broken"}) + "\n")  # fmt: skip
    assert read_done(out, "vit-b-16").paths == {"a.png", "b.png"}
    with pytest.raises(OutputError, match="holds results of the model vit-b-16, not demo-shapes"):
        read_done(out, "demo-shapes")
