"""``vit-desktop --self-test``, and the app with no stdout/stderr (a windowed build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from vit_desktop import selftest

CHECKS = ("imports", "qt platform", "demo model", "devices", "weights cache", "log folder")


def run(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vit_desktop", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def _lines(out: str) -> dict[str, tuple[str, str]]:
    """check name -> (status, detail) from the report."""
    found = {}
    for line in out.splitlines()[1:-1]:
        status, rest = line.split(None, 1)
        for name in CHECKS:
            if rest.startswith(name + " "):
                found[name] = (status, rest[len(name) :].strip())
    return found


def test_self_test_passes_here_and_reports_every_check():
    r = run("--self-test")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = _lines(r.stdout)
    assert set(lines) == set(CHECKS), r.stdout
    assert all(status == "ok" for status, _ in lines.values()), r.stdout  # offscreen Qt counts as a display
    assert r.stdout.splitlines()[0].startswith("ViT Desktop ") and "Python package" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("all 6 checks passed")
    assert "star" in lines["demo model"][1] and "attention on the shape" in lines["demo model"][1]
    assert lines["qt platform"][1].startswith("offscreen") and "app icon loads" in lines["qt platform"][1]
    assert lines["weights cache"][1].startswith(os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints"))
    assert "cpu: works" in lines["devices"][1] and "cuda" in lines["devices"][1]
    log = Path(os.environ["VIT_DESKTOP_LOG_DIR"]) / "vit-desktop.log"
    assert "all 6 checks passed" in log.read_text(encoding="utf-8")  # the report is kept in the log too
    assert r.stderr == ""


def test_self_test_fails_when_qt_cannot_start():
    env = {**os.environ, "QT_QPA_PLATFORM": "no-such-platform", "DISPLAY": ":0"}
    r = run("--self-test", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    status, detail = _lines(r.stdout)["qt platform"]
    assert status == "FAIL" and "no-such-platform" in detail, r.stdout
    assert _lines(r.stdout)["demo model"][0] == "ok"  # the other checks still ran
    assert "1 of 6 checks failed" in r.stdout


def test_self_test_fails_when_the_weights_cache_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    r = run("--self-test", env={**os.environ, "TORCH_HOME": str(blocker)})
    assert r.returncode == 1, r.stdout + r.stderr
    status, detail = _lines(r.stdout)["weights cache"]
    assert status == "FAIL" and "not writable" in detail and "TORCH_HOME" in detail


def test_self_test_takes_no_other_arguments():
    r = run("--self-test", "photo.jpg")
    assert r.returncode == 2 and "no other arguments" in r.stderr


def test_the_demo_image_is_classified_right_in_process():
    # The pinned sample is a star, and the model says so with its attention on the star.
    sample = selftest._demo_sample()
    assert sample.name == "star" and sample.full_size == selftest.DEMO_SIZE
    check = selftest.check_demo_model()
    assert check.status == selftest.OK, check.detail
    again = selftest._demo_sample()  # the same image every time
    assert np.array_equal(np.asarray(again.image), np.asarray(sample.image))


def test_report_format_counts_failures():
    checks = [selftest.Check("imports", "ok", "fine"), selftest.Check("devices", "FAIL", "cuda: FAILS")]
    text = selftest.format_report(checks, 1.23)
    assert text.splitlines()[-1] == "1 of 2 checks failed (1.2 s)"
    assert "  FAIL  devices  cuda: FAILS" in text


NO_STREAMS = (
    "import sys\n"
    "sys.stdout = sys.stderr = None\n"  # what a windowed build (or pythonw) starts with
    "from vit_desktop.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _no_streams(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_STREAMS, *args], capture_output=True, text=True, timeout=240
    )


def test_without_stdout_and_stderr_the_self_test_still_runs_and_logs_its_report():
    r = _no_streams("--self-test")
    assert r.returncode == 0, r.stderr[-3000:]
    log = Path(os.environ["VIT_DESKTOP_LOG_DIR"]) / "vit-desktop.log"
    assert "all 6 checks passed" in log.read_text(encoding="utf-8")


def test_without_stdout_and_stderr_the_command_line_works(tmp_path):
    from vit_desktop.core.demo.shapes import generate

    img = tmp_path / "star.png"
    generate(np.random.default_rng(1), label=8, size=(300, 200)).image.save(img)
    out = tmp_path / "out.json"
    r = _no_streams("classify", str(img), str(tmp_path / "missing.png"), "--output", str(out))
    assert r.returncode == 1, r.stderr[-3000:]  # one image failed
    lines = out.read_text(encoding="utf-8").splitlines()  # and the run went on to the end
    assert len(lines) == 2 and '"label": "star"' in lines[0] and '"error"' in lines[1]
    expected = {("models",): 0, ("models", "--json"): 0, ("--version",): 0, ("download", "demo-shapes"): 0,
                ("classify", "--top-k", "0", str(img)): 2}  # fmt: skip
    for args, rc in expected.items():
        r = _no_streams(*args)
        assert r.returncode == rc, (args, r.stderr[-2000:])
    log = Path(os.environ["VIT_DESKTOP_LOG_DIR"]) / "vit-desktop.log"
    assert "unexpected error" not in log.read_text(encoding="utf-8")
