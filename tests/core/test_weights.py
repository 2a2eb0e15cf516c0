"""The weights manager against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import DIGEST, PAYLOAD, serving
from tests.helpers import weights_entry as _entry
from vit_desktop.core import catalog, weights
from vit_desktop.core.errors import (
    ChecksumError,
    CorruptCacheError,
    DownloadCancelled,
    OfflineError,
    WeightsError,
)


@pytest.fixture
def server():
    with serving() as srv:
        yield srv


def _url(srv, mode: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{mode}/file.pth"


def _no_partials() -> bool:
    return not list(weights.cache_dir().glob("*.partial"))


def test_cache_is_torchvision_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights.cache_dir() == tmp_path / "hub" / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"


def test_download_success_reports_progress(server):
    seen = []
    entry = _entry(_url(server, "ok"))
    assert not weights.is_downloaded(entry)
    path = weights.download(entry, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == PAYLOAD
    assert path.name == entry.filename and path.parent == weights.cache_dir()
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert weights.is_downloaded(entry) and _no_partials()
    # Second time: verified from the cache, no request.
    hits = server.hits
    got = weights.ensure(entry)
    assert not got.downloaded and server.hits == hits


def test_stale_partial_from_a_killed_process_is_cleaned(server):
    import os

    folder = weights.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "old.pth.dead.partial"
    stale.write_bytes(b"half")
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    fresh = folder / "other.pth.live.partial"  # maybe another process, still downloading
    fresh.write_bytes(b"half")
    weights.download(_entry(_url(server, "ok")))
    assert not stale.exists() and fresh.exists()


def test_torchvision_style_hash_prefix_accepted(server):
    entry = _entry(_url(server, "ok"), sha=DIGEST[:8])
    assert weights.download(entry).exists()


def test_redirect_followed(server):
    assert weights.download(_entry(_url(server, "redirect"))).read_bytes() == PAYLOAD


def test_cancel_removes_partial(server):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(DownloadCancelled):
        weights.download(_entry(_url(server, "slow")), cancel=cancel)
    assert _no_partials() and not weights.cached_path(_entry("x")).exists()


def test_hash_mismatch_refused_and_nothing_cached(server):
    entry = _entry(_url(server, "wrong"))
    with pytest.raises(ChecksumError, match="does not match"):
        weights.download(entry)
    assert not weights.cached_path(entry).exists() and _no_partials()


def test_connection_dropped_mid_file(server):
    entry = _entry(_url(server, "drop"))
    with pytest.raises(WeightsError, match="interrupted"):
        weights.download(entry)
    assert not weights.cached_path(entry).exists() and _no_partials()


def test_more_bytes_than_declared_refused(server):
    # Only the declared bytes are read; the file they make fails its hash and is refused.
    entry = _entry(_url(server, "more"))
    with pytest.raises(WeightsError, match="more than|does not match"):
        weights.download(entry)
    assert not weights.cached_path(entry).exists() and _no_partials()


def test_http_error_status(server):
    with pytest.raises(WeightsError, match="404"):
        weights.download(_entry(_url(server, "missing")))


def test_stall_can_be_cancelled_quickly(server):
    start = time.monotonic()
    deadline = start + 1.0
    with pytest.raises(DownloadCancelled):
        weights.download(_entry(_url(server, "stall")), cancel=lambda: time.monotonic() > deadline)
    assert time.monotonic() - start < 5
    assert _no_partials()


def test_stall_times_out(server, monkeypatch):
    monkeypatch.setattr(weights, "STALL_TIMEOUT_S", 0.6)
    with pytest.raises(WeightsError, match="stalled"):
        weights.download(_entry(_url(server, "stall")))
    assert _no_partials()


def test_offline_error_is_fast_and_says_where(server):
    # A port nobody listens on: connection refused, like a machine without network.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = _entry(f"http://127.0.0.1:{port}/x/test-weights-0000.pth")
    start = time.monotonic()
    with pytest.raises(OfflineError) as err:
        weights.ensure(entry)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert entry.filename in msg and entry.url in msg and str(weights.cache_dir()) in msg


def test_base_url_override(server, monkeypatch):
    monkeypatch.setenv("VIT_DESKTOP_WEIGHTS_URL", f"http://127.0.0.1:{server.server_address[1]}/ok")
    entry = _entry("https://example.invalid/models/test-weights-0000.pth")
    assert weights.download(entry).read_bytes() == PAYLOAD


@pytest.mark.parametrize("damage", ["truncate", "empty", "tamper"])
def test_corrupt_cache_detected_removed_and_refetched(server, damage):
    entry = _entry(_url(server, "ok"))
    path = weights.download(entry)
    if damage == "truncate":
        path.write_bytes(PAYLOAD[:1000])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        data = bytearray(PAYLOAD)
        data[12345] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match="removed"):
        weights.verify_cached(entry)
    assert not path.exists()
    path.write_bytes(b"junk")
    got = weights.ensure(entry)
    assert got.downloaded and got.recovered_corrupt and path.read_bytes() == PAYLOAD


def test_corrupt_cache_offline_reports(server):
    entry = _entry(_url(server, "ok"))
    path = weights.download(entry)
    path.write_bytes(b"junk")
    with pytest.raises(CorruptCacheError):
        weights.ensure(entry, allow_download=False)


def test_not_enough_disk_space(server, monkeypatch):
    monkeypatch.setattr(weights, "_free_space", lambda folder: 1000)
    with pytest.raises(WeightsError, match="disk space"):
        weights.download(_entry(_url(server, "ok")))
    assert _no_partials()


def test_disk_full_while_writing(server, monkeypatch):
    import builtins
    import errno

    real_open = builtins.open

    class _Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return _Full(f) if str(path).endswith(".partial") and "w" in mode else f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(WeightsError, match="disk filled up"):
        weights.download(_entry(_url(server, "ok")))
    monkeypatch.setattr(builtins, "open", real_open)
    assert _no_partials()


def test_two_downloads_at_once_give_one_good_file(server):
    entry = _entry(_url(server, "slow"))
    errors: list[BaseException] = []

    def go():
        try:
            weights.download(entry)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert Path(weights.cached_path(entry)).read_bytes() == PAYLOAD and _no_partials()


def test_download_command_line(server, capsys):
    from vit_desktop.cli import run_cli

    entry = _entry(_url(server, "ok"))
    catalog.register(entry)
    try:
        assert run_cli(["download", "test-model"]) == 0
        assert "downloaded" in capsys.readouterr().out
        assert run_cli(["download", "test-model"]) == 0
        assert "already cached" in capsys.readouterr().out
    finally:
        catalog.unregister("test-model")


def test_entry_without_a_hash_is_not_downloaded(server):
    with pytest.raises(WeightsError, match="no published hash"):
        weights.download(_entry(_url(server, "ok"), sha=None))
    assert _no_partials()


def test_malformed_url_is_a_weights_error():
    with pytest.raises(WeightsError, match="bad download URL"):
        weights.download(_entry("http://127.0.0.1:99999999/x/test-weights-0000.pth"))


# -- the full SHA-256 kept beside the cache (torchvision publishes only a prefix) ------------------


def _twin(prefix: str) -> bytes:
    """A small file whose SHA-256 starts with ``prefix`` but is not PAYLOAD's (brute force:
    about 16**len(prefix) tries)."""
    for i in itertools.count():
        data = b"not the weights " + i.to_bytes(8, "little")
        digest = hashlib.sha256(data).hexdigest()
        if digest.startswith(prefix) and digest != DIGEST:
            return data
    raise AssertionError("unreachable")


def _manifest() -> dict:
    return json.loads(weights.manifest_path().read_text(encoding="utf-8"))["files"]


def test_a_download_records_its_full_digest_and_a_prefix_twin_is_refused(server):
    entry = _entry(_url(server, "ok"), sha=DIGEST[:4])  # a short published prefix, as torchvision's
    path = weights.download(entry)
    assert _manifest()[entry.filename]["sha256"] == DIGEST and _no_partials()
    twin = _twin(DIGEST[:4])
    assert weights.hash_matches(hashlib.sha256(twin).hexdigest(), entry.sha256)  # the prefix alone passes it
    path.write_bytes(twin)
    with pytest.raises(CorruptCacheError, match="removed") as err:
        weights.verify_cached(entry)
    assert weights.MANIFEST in str(err.value) and not path.exists()
    path.write_bytes(twin)
    got = weights.ensure(entry)  # removed, fetched again, and the good file passes
    assert got.downloaded and got.recovered_corrupt and path.read_bytes() == PAYLOAD
    assert not weights.ensure(entry).downloaded
    path.write_bytes(twin)
    with pytest.raises(CorruptCacheError):
        weights.ensure(entry, allow_download=False)  # offline: reported like any damaged file


def test_a_file_put_in_the_cache_by_hand_is_known_from_its_first_check(server):
    entry = _entry(_url(server, "ok"), sha=DIGEST[:4])
    path = weights.cached_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PAYLOAD)  # copied from another machine: no record yet
    assert not weights.ensure(entry).downloaded and server.hits == 0
    assert _manifest()[entry.filename]["sha256"] == DIGEST
    path.write_bytes(_twin(DIGEST[:4]))
    with pytest.raises(CorruptCacheError, match="recorded"):
        weights.verify_cached(entry)


@pytest.mark.parametrize(
    "text",
    ["{not json", "[" * 200_000, '{"files": []}', '{"files": {"test-weights-0000.pth": {"sha256": "abc"}}}',
     '{"files": {"test-weights-0000.pth": "' + "0" * 64 + '"}}'],
    ids=["garbled", "deep", "no-files", "short-digest", "not-a-record"],
)  # fmt: skip
def test_a_damaged_manifest_is_ignored_and_written_anew(server, text):
    entry = _entry(_url(server, "ok"))
    path = weights.download(entry)
    weights.manifest_path().write_text(text, encoding="utf-8")
    assert weights.verify_cached(entry) == path  # checked against the published hash, as before
    assert _manifest()[entry.filename]["sha256"] == DIGEST and _no_partials()


def test_manifest_keeps_every_file_when_downloads_finish_together(server):
    entries = [_entry(_url(server, "slow"), filename=f"test-weights-{i:04d}.pth") for i in range(4)]
    threads = [threading.Thread(target=weights.download, args=(e,)) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {e.filename for e in entries} <= set(_manifest()) and _no_partials()


def test_a_plain_http_mirror_is_warned_about_once_per_download(server, monkeypatch):
    import logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: seen.append(rec.getMessage())  # type: ignore[method-assign]
    logging.getLogger("vit_desktop.weights").addHandler(handler)
    try:
        monkeypatch.setenv(
            "VIT_DESKTOP_WEIGHTS_URL", f"http://user:secret@127.0.0.1:{server.server_address[1]}/ok"
        )
        assert weights.download(_entry("https://example.invalid/m/test-weights-0000.pth")).exists()
    finally:
        logging.getLogger("vit_desktop.weights").removeHandler(handler)
    warned = [m for m in seen if "plain http" in m]
    assert len(warned) == 1 and "\n" not in warned[0] and "secret" not in warned[0] and "https" in warned[0]
    assert catalog.plain_http_notice("HTTP://mirror.example/w") is not None
    for quiet in ("https://mirror.example/w", "", None, "file:///srv/w"):
        monkeypatch.delenv("VIT_DESKTOP_WEIGHTS_URL", raising=False)
        assert catalog.plain_http_notice(quiet) is None
