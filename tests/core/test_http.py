"""The one HTTP client (vit_desktop.core.http) against real servers on 127.0.0.1: redirect rules,
size caps, the deadline, stalls and a cancel that wakes a blocked read."""

from __future__ import annotations

import contextlib
import gc
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.helpers import QuietHandler, serving
from tests.helpers import QuietServer as _Server
from vit_desktop.core import http as web

BODY = bytes(range(256)) * 64  # 16 KiB
BLOCK = b"\x00" * 65536


class _Handler(QuietHandler):
    def do_GET(self):  # noqa: N802
        server = self.server
        parts = urllib.parse.urlsplit(self.path)
        mode = parts.path.strip("/")
        query = dict(urllib.parse.parse_qsl(parts.query))
        server.hits.append(mode)
        try:
            if mode in ("redirect", "loop"):
                self.empty(302, query.get("to", self.path))
                return
            if mode == "status":
                self.empty(503)
                return
            self.send_response(200)
            close = mode in ("endless", "exact", "close") or "close" in query
            if close:  # no length: the body ends when the connection does
                self.send_header("Connection", "close")
            elif mode == "huge-declared":
                self.send_header("Content-Length", str(10**12))
            else:
                self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            if mode == "endless":
                while not server.release.is_set():
                    self.wfile.write(BLOCK)
            elif mode == "exact":
                self.wfile.write(b"x" * int(query["n"]))
            elif mode == "trickle":  # a byte now and then: never a stall, never done
                for b in BODY:
                    if server.release.wait(0.05):
                        return
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
            elif mode in ("stall", "huge-declared"):
                self.wfile.write(BODY[:10])
                self.wfile.flush()
                server.release.wait(60)
            else:
                self.wfile.write(BODY)
        except (BrokenPipeError, ConnectionResetError):
            server.peer_gone.set()


@contextlib.contextmanager
def _serving(tls: ssl.SSLContext | None = None) -> Iterator[_Server]:
    with serving(_Handler, tls=tls, hits=[]) as srv:
        srv.peer_gone = threading.Event()  # a client closed its end while the server was writing
        yield srv


def _base(srv: _Server, scheme: str = "http", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{srv.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    with _serving() as srv:
        yield srv


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate, monkeypatch) -> Iterator[_Server]:
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # the client's default context trusts it
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with _serving(ctx) as srv:
        yield srv


def test_fetches_the_body_and_reports_its_length(server):
    with web.open_stream(f"{_base(server)}/ok") as resp:
        assert resp.total == len(BODY)
        assert b"".join(resp) == BODY and resp.received == len(BODY)
    assert web.fetch_bytes(f"{_base(server)}/redirect?to=/ok", same_host=True) == BODY


def test_https_redirect_to_https_followed_but_never_to_http(tls_server, server):
    https = _base(tls_server, "https")
    assert web.fetch_bytes(f"{https}/redirect?to=/ok") == BODY  # the TLS setup itself works
    to_http = urllib.parse.quote(f"{_base(server)}/ok", safe="")
    with pytest.raises(web.RedirectRefused, match="from https to http://"):
        web.fetch_bytes(f"{https}/redirect?to={to_http}")
    assert server.hits == []  # the plain-http server was never asked


def test_redirect_away_from_the_host_refused_with_same_host(server):
    with _serving() as other:
        elsewhere = urllib.parse.quote(f"{_base(other)}/ok", safe="")
        with pytest.raises(web.RedirectRefused) as err:
            web.fetch_bytes(f"{_base(server)}/redirect?to={elsewhere}", same_host=True)
        line = str(err.value)
        assert "another host" in line and str(other.server_address[1]) in line and "\n" not in line
        assert other.hits == []
        # Weights downloads may follow a mirror to another host (a CDN).
        assert web.fetch_bytes(f"{_base(server)}/redirect?to={elsewhere}") == BODY
    other_name = urllib.parse.quote(f"{_base(server, host='localhost')}/ok", safe="")
    with pytest.raises(web.RedirectRefused, match="another host"):
        web.fetch_bytes(f"{_base(server)}/redirect?to={other_name}", same_host=True)


@pytest.mark.parametrize(
    "location", ["javascript:alert(1)", "ftp://127.0.0.1/x", "http://[::1/x", "file:///etc"]
)
def test_redirect_to_something_not_on_the_web_refused(server, location):
    with pytest.raises(web.RedirectRefused, match="not a web link"):
        web.fetch_bytes(f"{_base(server)}/redirect?to={urllib.parse.quote(location, safe='')}")


def test_redirect_loop_ends_after_five_hops(server):
    with pytest.raises(web.TooManyRedirects, match="302"):
        web.fetch_bytes(f"{_base(server)}/loop")
    assert server.hits == ["loop"] * (web.MAX_HOPS + 1)


def test_declared_size_over_the_cap_refused_before_reading(server):
    start = time.monotonic()
    with pytest.raises(web.TooLarge) as err:
        web.fetch_bytes(f"{_base(server)}/huge-declared", max_bytes=1000)
    assert err.value.declared == 10**12 and err.value.limit == 1000
    assert time.monotonic() - start < 5  # the server never sends the body: nothing was read


def test_streamed_size_over_the_cap_cut_off(server):
    with (
        pytest.raises(web.TooLarge) as err,
        web.open_stream(f"{_base(server)}/endless", max_bytes=300_000) as r,
    ):
        assert r.total is None
        for _ in r:
            pass
    assert err.value.declared is None and r.received == 300_001
    # Exactly the cap is fine; one byte more is not.
    assert len(web.fetch_bytes(f"{_base(server)}/exact?n=5000", max_bytes=5000)) == 5000
    with pytest.raises(web.TooLarge):
        web.fetch_bytes(f"{_base(server)}/exact?n=5001", max_bytes=5000)


def test_deadline_ends_a_trickle(server):
    start = time.monotonic()
    with pytest.raises(web.DeadlineExceeded, match="longer than 0.5 s"):
        web.fetch_bytes(f"{_base(server)}/trickle", deadline_s=0.5)
    assert time.monotonic() - start < 5  # the trickle alone lasts 13 s


@pytest.mark.parametrize("query", ["", "?close=1"])  # "Connection: close" hands the socket to the response
def test_cancel_wakes_a_read_blocked_in_recv(server, query):
    stop = threading.Event()
    with web.open_stream(f"{_base(server)}/stall{query}", cancel=stop.is_set, stall_s=60) as resp:
        assert resp.read_chunk() == BODY[:10]
        threading.Timer(0.3, stop.set).start()
        start = time.monotonic()
        with pytest.raises(web.Cancelled):
            resp.read_chunk()  # blocks in recv(): only the watcher can end it before 60 s
    assert time.monotonic() - start < 5


def test_stall_times_out(server):
    with pytest.raises(web.Stalled) as err:
        web.fetch_bytes(f"{_base(server)}/stall", stall_s=0.5)
    assert err.value.received == 10


def test_connection_close_response_is_closed_at_once(server):
    """With "Connection: close" the response owns the socket: refusing it must close it then,
    not when the garbage collector gets to it (the error's traceback keeps it alive)."""
    with pytest.raises(web.TooLarge) as err:
        web.fetch_bytes(f"{_base(server)}/endless", max_bytes=100)
    assert server.peer_gone.wait(10), "the client's socket is still open"
    del err
    assert web.fetch_bytes(f"{_base(server)}/close") == BODY
    gc.collect()  # an unclosed socket would warn here, and warnings are errors in the tests


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999999/x", "http://127.0.0.1:port/x", "http://[::1/x", "http://[nothex]/x",
     "ftp://127.0.0.1/x", "http:///x", "http://exa mple.org\n/x", "not a url"],
)  # fmt: skip
def test_malformed_links_are_a_clean_error(url):
    with pytest.raises(web.BadUrl) as err:
        web.fetch_bytes(url, deadline_s=5)
    assert "\n" not in str(err.value) and err.value.url == url


def test_status_and_refused_connection(server):
    with pytest.raises(web.BadStatus) as err:
        web.fetch_bytes(f"{_base(server)}/status")
    assert err.value.status == 503 and "503" in str(err.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(web.ConnectFailed) as refused:
        web.fetch_bytes(f"http://127.0.0.1:{port}/x")
    assert not refused.value.protocol and not refused.value.timed_out


def test_a_bracketed_ipv6_link_without_a_port_is_a_clean_error():
    # http.client, given no port, would parse "fe80::abcd" again as host:port.
    for url in ("http://[fe80::abcd]/x.png", "http://[::1]/x.png"):
        with pytest.raises(web.HttpError):
            web.fetch_bytes(url, connect_s=0.5, deadline_s=2)
