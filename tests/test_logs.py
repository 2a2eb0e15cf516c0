"""The log file: one line per record whatever the names in it, no credentials, private modes.

Each test configures logging in a child process (``setup_logging`` runs once per process),
with the log folder that conftest gives every test."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vit_desktop.core.text import redact_urls

_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _log_dir() -> Path:
    return Path(os.environ["VIT_DESKTOP_LOG_DIR"])


def _run(code: str) -> list[str]:
    """Run ``code`` after ``setup_logging()`` in a child; the log file's lines."""
    prelude = "import logging, sys\nfrom vit_desktop.logs import get_logger, setup_logging\nsetup_logging()\n"
    r = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # nothing of it on the terminal
    return (_log_dir() / "vit-desktop.log").read_text(encoding="utf-8").splitlines()


def test_a_newline_in_a_name_cannot_forge_a_record():
    lines = _run("""
        forged = "evil.pt\\n2030-01-01 00:00:00,000 ERROR vit_desktop: all good\\r\\x1b[2Jx"
        get_logger("checkpoints").warning("could not load %s", forged)
        logging.getLogger("PIL.Image").error("opening %s", forged)
        try:
            raise ValueError(forged)
        except ValueError:
            get_logger().exception("failed on %s", "two\\nlines.png")
    """)
    records = [line for line in lines if _STAMP.match(line)]
    assert len(records) == 3, lines
    assert all(_STAMP.match(line) or line.startswith("    ") for line in lines), lines  # tracebacks indented
    assert records[0].endswith(
        r"could not load evil.pt\n2030-01-01 00:00:00,000 ERROR vit_desktop: all good\r\x1b[2Jx"
    )
    assert "opening evil.pt\\n2030" in records[1] and " PIL.Image: " in records[1]
    assert records[2].endswith(r"failed on two\nlines.png")
    # In a traceback a newline stays a newline, but every line of it is indented: not a record.
    assert (
        "    ValueError: evil.pt" in lines
        and "    2030-01-01 00:00:00,000 ERROR vit_desktop: all good" in lines
    )
    assert not any("\x1b" in line or "\r" in line for line in lines)


def test_credentials_in_urls_are_hidden():
    lines = _run("""
        get_logger("weights").info("downloading %s", "https://user:pass@h/x?token=abc")
        get_logger().warning("redirected to https://cdn.example/w.pth?X-Amz-Signature=s3cr3t&n=1")
        try:
            raise OSError("GET https://me:hunter2@example.com/a?key=k1 failed")
        except OSError:
            get_logger().exception("fetch failed")
    """)
    text = "\n".join(lines)
    assert "downloading https://***@h/x?token=***" in text
    assert "https://cdn.example/w.pth?X-Amz-Signature=***&n=1" in text
    assert "GET https://***@example.com/a?key=*** failed" in text  # inside the traceback too
    for secret in ("user:pass", "abc", "s3cr3t", "hunter2", "k1"):
        assert secret not in text, secret


@pytest.mark.parametrize(
    "url,shown",
    [
        ("https://user:pass@h/x?token=abc", "https://***@h/x?token=***"),
        ("https://TOKEN@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("http://h/a?x=1&api_key=zz&sig=q#access_token=t", "http://h/a?x=1&api_key=***&sig=***#access_token=***"),
        ("https://h/cb?code=123&state=ok", "https://h/cb?code=***&state=ok"),
        ("https://medium.com/@someone/post?ref=home", "https://medium.com/@someone/post?ref=home"),
        ("see https://u:p@host:8080/p.", "see https://***@host:8080/p."),
        ("no link here: user:pass@host", "no link here: user:pass@host"),
    ],
)  # fmt: skip
def test_redact_urls(url, shown):
    assert redact_urls(url) == shown


@posix_only
def test_a_new_log_is_private():
    _run("get_logger().warning('hello')")
    assert stat.S_IMODE(os.stat(_log_dir()).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(_log_dir() / "vit-desktop.log").st_mode) == 0o600


@posix_only
def test_an_existing_loose_log_is_tightened_and_stays_private_after_rotation():
    folder = _log_dir()
    log = folder / "vit-desktop.log"
    log.write_text("old\n")
    (folder / "vit-desktop.log.1").write_text("older\n")
    os.chmod(folder, 0o755)
    os.chmod(log, 0o644)
    os.chmod(folder / "vit-desktop.log.1", 0o666)
    lines = _run("""
        for i in range(12_000):  # about 1.3 MB: one rollover
            get_logger().info("line %05d %s", i, "x" * 60)
    """)
    assert lines and lines[-1].endswith("line 11999 " + "x" * 60)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for name in ("vit-desktop.log", "vit-desktop.log.1", "vit-desktop.log.2"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name


@posix_only
def test_a_shared_sticky_folder_is_left_alone(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    env = {**os.environ, "VIT_DESKTOP_LOG_DIR": str(shared)}
    code = (
        "from vit_desktop.logs import get_logger, setup_logging\nsetup_logging()\nget_logger().warning('x')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(shared / "vit-desktop.log").st_mode) == 0o600


def test_other_libraries_loggers_go_to_the_file_never_to_stderr():
    lines = _run("""
        logging.getLogger("PIL.TiffImagePlugin").error("More samples per pixel than can be decoded: %s", 9)
        logging.getLogger("urllib3").warning("retrying")
    """)
    text = "\n".join(lines)
    assert "ERROR PIL.TiffImagePlugin: More samples per pixel than can be decoded: 9" in text
    assert "WARNING urllib3: retrying" in text
