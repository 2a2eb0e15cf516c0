"""Bad networks, against servers on 127.0.0.1 only: every failure is one typed line, nothing
half-downloaded is ever left as a cached file.  (Refused connections, stalls, cancel, drops,
wrong bytes, more bytes than declared, a full disk and two downloads at once are in
tests/core/test_weights.py.)
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import pytest

from tests.helpers import QuietHandler
from tests.helpers import QuietServer as _Server
from vit_desktop.core import catalog, weights
from vit_desktop.core.errors import DownloadCancelled, WeightsError
from vit_desktop.core.preprocess import Preprocessing

PAYLOAD = bytes(range(256)) * 4096 * 2  # 2 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(QuietHandler):
    def do_GET(self):  # noqa: N802
        mode = self.path.strip("/").split("/")[0]
        try:
            if mode == "endless":  # chunked, no length, never ends
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"\x00" * 65536
                while not self.server.release.is_set():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                return
            if mode == "announce-huge":
                self.send_response(200)
                self.send_header("Content-Length", str(50 << 30))
                self.end_headers()
                self.wfile.write(PAYLOAD[:1024])
                self.server.release.wait(5)
                return
            if mode == "loop":
                self.empty(302, self.path)
                return
            if mode == "body":  # whatever the test put there
                body = self.server.body
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if mode == "trickle":  # a byte now and then: never a stall, never done
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                for b in PAYLOAD:
                    if self.server.release.wait(0.05):
                        return
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for i in range(0, len(PAYLOAD), 65536):
                self.wfile.write(PAYLOAD[i : i + 65536])
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.release = threading.Event()
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


class _RawServer:
    """A TCP server on 127.0.0.1 that answers every connection with ``reply`` and hangs up."""

    def __init__(self, reply: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def _entry(url: str, size_mb: float | None = None) -> catalog.ModelEntry:
    pre = Preprocessing(input_size=(32, 32), patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    return catalog.ModelEntry(
        id="test-net",
        display_name="Net test",
        group="Test",
        architecture="torchvision:vit_b_16",
        params=1,
        preprocessing=pre,
        labels=("a", "b"),
        url=url,
        sha256=DIGEST,
        filename="net-test-0000.pth",
        file_size_mb=size_mb,
    )


def _url(srv, mode: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{mode}/net-test-0000.pth"


def _nothing_cached(entry) -> bool:
    folder = weights.cache_dir()
    return not weights.cached_path(entry).exists() and not list(folder.glob("*.partial"))


def _one_line(exc: BaseException) -> str:
    text = exc.one_line()
    assert "\n" not in text and "Traceback" not in text and len(text) < 400
    return text


def test_endless_stream_is_cut_near_the_catalog_size(server):
    entry = _entry(_url(server, "endless"), size_mb=1.0)
    with pytest.raises(WeightsError) as err:
        weights.download(entry)
    assert "more than" in _one_line(err.value)
    assert _nothing_cached(entry)


def test_absurd_announced_size_is_refused_before_reading(server):
    entry = _entry(_url(server, "announce-huge"), size_mb=2.0)
    start = time.monotonic()
    with pytest.raises(WeightsError) as err:
        weights.download(entry)
    assert "announced" in _one_line(err.value)
    assert time.monotonic() - start < 10 and _nothing_cached(entry)


def test_redirect_loop_ends(server):
    entry = _entry(_url(server, "loop"))
    with pytest.raises(WeightsError) as err:
        weights.download(entry)
    assert "302" in _one_line(err.value) and _nothing_cached(entry)


@pytest.mark.parametrize(
    "reply", [b"", b"hello, this is not HTTP\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Len"]
)
def test_server_that_is_not_http(reply):
    srv = _RawServer(reply)
    try:
        entry = _entry(f"http://127.0.0.1:{srv.port}/x/net-test-0000.pth")
        start = time.monotonic()
        with pytest.raises(WeightsError) as err:  # OfflineError, or "sent nothing"
            weights.ensure(entry)
        assert time.monotonic() - start < 20  # did not hang (generous: the machine may be busy)
        assert "net-test-0000.pth" in _one_line(err.value) and _nothing_cached(entry)
    finally:
        srv.close()


def test_trickle_is_cancelled_promptly(server):
    """A server that never stalls long enough to time out: only cancel can end it."""
    entry = _entry(_url(server, "trickle"))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(DownloadCancelled):
        weights.download(entry, cancel=cancel.is_set)
    assert time.monotonic() - start < 10 and _nothing_cached(entry)  # only cancel ends a trickle


def test_many_downloads_of_one_file_with_one_cancelled(server):
    entry = _entry(_url(server, "ok"))
    outcomes: list[object] = []
    lock = threading.Lock()

    def go(cancel_after: float | None) -> None:
        t0 = time.monotonic()
        cancel = (lambda: time.monotonic() - t0 > cancel_after) if cancel_after else None
        try:
            path = weights.download(entry, cancel=cancel)
            outcome: object = path.read_bytes() == PAYLOAD
        except DownloadCancelled:
            outcome = "cancelled"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=go, args=(a,)) for a in (None, None, 0.05, None)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(str, outcomes)) == ["True", "True", "True", "cancelled"]
    assert weights.cached_path(entry).read_bytes() == PAYLOAD
    assert not list(weights.cache_dir().glob("*.partial"))
    assert weights.ensure(entry).downloaded is False  # the file that stayed passes its hash


def test_cache_entry_that_is_a_folder_is_explained(server):
    entry = _entry(_url(server, "ok"))
    weights.cached_path(entry).mkdir(parents=True)
    assert not weights.is_downloaded(entry)
    with pytest.raises(WeightsError) as err:
        weights.ensure(entry)
    assert "folder" in _one_line(err.value)


def test_download_command_reports_a_bad_server_in_one_line(capsys):
    from vit_desktop.cli import run_cli

    srv = _RawServer(b"garbage\r\n\r\n")
    entry = _entry(f"http://127.0.0.1:{srv.port}/x/net-test-0000.pth")
    catalog.register(entry)
    try:
        assert run_cli(["download", "test-net"]) == 2
    finally:
        catalog.unregister("test-net")
        srv.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "net-test-0000.pth" in err[0] and "by hand" in err[0]
    assert _nothing_cached(entry)


def test_weights_that_pass_their_hash_but_would_run_code_are_removed(server, tmp_path):
    """The published hash is of a file that would run code (a poisoned mirror, a wrong catalog
    entry): the hash matches, the safe loader still refuses, the file is removed, nothing ran."""
    import os
    import pickle

    from vit_desktop.core.classifier import load_classifier
    from vit_desktop.core.errors import CorruptCacheError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    server.body = pickle.dumps({"state_dict": Payload()}, protocol=2)  # what torch.save writes
    entry = _entry(_url(server, "body"))
    entry = catalog.ModelEntry(**{**entry.__dict__, "sha256": hashlib.sha256(server.body).hexdigest()})
    with pytest.raises(CorruptCacheError) as err:
        load_classifier(entry, device="cpu")
    assert "removed" in _one_line(err.value)
    assert not marker.exists() and _nothing_cached(entry)
