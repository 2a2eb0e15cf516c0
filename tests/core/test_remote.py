"""Fetching a dropped web link: size cap, timeout, errors — against a server on 127.0.0.1."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import QuietHandler
from tests.helpers import QuietServer as _Server
from vit_desktop.core.errors import ImageLoadError
from vit_desktop.core.remote import fetch_image, is_web_url

_img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
_buf = io.BytesIO()
_img.save(_buf, format="PNG")
PNG = _buf.getvalue()


class _Handler(QuietHandler):
    def do_GET(self):  # noqa: N802
        mode = self.path.strip("/").split("/")[0]
        if mode == "missing":
            self.empty(404)
            return
        if mode in ("hop", "elsewhere"):  # a redirect on this host, or to another name for it
            port = self.server.server_address[1]
            self.empty(302, "/ok/a.png" if mode == "hop" else f"http://localhost:{port}/ok/a.png")
            return
        body = {"text": b"<html>not an image</html>", "big": PNG * 50}.get(mode, PNG)
        self.send_response(200)
        if mode == "huge-declared":
            self.send_header("Content-Length", str(10**12))
        elif mode != "big":  # "big" sends no length: the cap must hold while reading
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            if mode == "trickle":  # a byte at a time: each read succeeds, the whole never ends
                for i in range(200):
                    if self.server.release.wait(0.2):
                        return
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                return
            if mode == "stall":
                self.wfile.write(body[:100])
                self.wfile.flush()
                self.server.release.wait(10)
                return
            if mode != "huge-declared":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def base():
    srv = _Server(("127.0.0.1", 0), _Handler)  # server_close joins handlers
    srv.release = threading.Event()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def test_fetches_and_decodes_like_a_file(base):
    loaded = fetch_image(f"{base}/ok/a.png")
    assert loaded.original_size == (90, 60) and loaded.source == f"{base}/ok/a.png"
    assert np.array_equal(np.asarray(loaded.image), np.asarray(_img))


@pytest.mark.parametrize(
    ("path", "kw", "words"),
    [
        ("huge-declared/x.png", {}, "more than the 50 MB"),
        ("big/x.png", {"max_bytes": len(PNG) * 10}, "more than the"),
        ("missing/x.png", {}, "404"),
        ("text/x.png", {}, "not an image"),
    ],
)
def test_refusals_are_one_clear_line(base, path, kw, words):
    with pytest.raises(ImageLoadError) as err:
        fetch_image(f"{base}/{path}", **kw)
    line = err.value.one_line()
    assert words in line and base in line and "\n" not in line


def test_stall_times_out_and_cancel_stops_it(base):
    t0 = time.monotonic()
    with pytest.raises(ImageLoadError, match="no answer|longer than"):
        fetch_image(f"{base}/stall/x.png", timeout=1.0)
    assert time.monotonic() - t0 < 8  # did not hang (generous: the machine may be busy)
    with pytest.raises(ImageLoadError, match="cancelled"):
        fetch_image(f"{base}/ok/x.png", cancel=lambda: True)


def test_a_trickling_server_meets_the_deadline_and_cancel(base):
    t0 = time.monotonic()
    with pytest.raises(ImageLoadError, match="longer than 1 s"):
        fetch_image(f"{base}/trickle/x.png", timeout=1.0)
    assert time.monotonic() - t0 < 15  # the trickle alone lasts 40 s
    t0 = time.monotonic()
    with pytest.raises(ImageLoadError, match="cancelled"):
        fetch_image(f"{base}/trickle/x.png", cancel=lambda: time.monotonic() - t0 > 0.5)
    assert time.monotonic() - t0 < 15  # the trickle alone lasts 40 s


def test_refused_connection_and_non_web_links():
    with pytest.raises(ImageLoadError, match="could not connect"):
        fetch_image("http://127.0.0.1:9/x.png", timeout=3)  # nothing listens on port 9
    for bad in ("file:///etc/passwd", "ftp://example.org/x.png", "javascript:alert(1)", "/tmp/x.png"):
        assert not is_web_url(bad)
        with pytest.raises(ImageLoadError, match="only http and https"):
            fetch_image(bad)


def test_redirects_stay_on_the_host_the_person_agreed_to(base):
    assert fetch_image(f"{base}/hop/x.png").original_size == (90, 60)
    with pytest.raises(ImageLoadError) as err:
        fetch_image(f"{base}/elsewhere/x.png")
    line = err.value.one_line()
    assert line.startswith(f"{base}/elsewhere/x.png: refused a redirect") and "localhost" in line


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999999/x.png", "http://[::1/x.png", "http://[zz]/x.png"])
def test_malformed_links_are_one_clear_line(url):
    with pytest.raises(ImageLoadError) as err:
        fetch_image(url)
    line = err.value.one_line()
    assert line.startswith(url) and "malformed link" in line
