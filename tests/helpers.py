"""Helpers shared by several test files (one place, never imported across test files)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import threading
import time

import numpy as np
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from vit_desktop.core.catalog import ModelEntry
from vit_desktop.core.demo.shapes import generate


def shape_file(tmp_path, label: int, size=(480, 260), seed=0):
    s = generate(np.random.default_rng(seed), label=label, size=size)
    path = tmp_path / f"shape{label}_{seed}.png"
    s.image.save(path)
    return path, s


def drop_mime(win, mime: QMimeData) -> None:
    """A real drag-enter then drop of ``mime`` on the middle of the window."""
    x, y = win.width() // 2, win.height() // 2
    enter = QDragEnterEvent(QPoint(x, y), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(win, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(x, y), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(win, drop)


def drop_paths(win, paths: list[str]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(p) for p in paths])
    drop_mime(win, mime)


def wait_result(qtbot, win, key: str):
    def done() -> bool:
        item = win.items.get(key)
        return item is not None and (item.result is not None or item.error is not None)

    qtbot.waitUntil(done, timeout=60_000)
    return win.items[key]


def worker_barrier(qtbot, win, timeout: int = 60_000) -> None:
    """Return once everything the worker emitted so far has reached the window: a request
    queued behind all earlier ones, answered in order (no fixed sleep)."""
    with qtbot.waitSignal(win.worker.worker.catalogReady, timeout=timeout):
        win.requestCatalog.emit()


# -- messages ----------------------------------------------------------------------------


def shown_name(path: str) -> str:
    # Control characters as escapes (\\n), bytes that are not UTF-8 as \\xNN.
    name = os.path.basename(path)
    return "".join(
        c if c.isprintable()
        else f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
        else c.encode("unicode_escape", "backslashreplace").decode()
        for c in name
    )  # fmt: skip


def assert_one_clear_line(message: str, path: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) <= 300, message
    assert "Traceback" not in message
    assert message.startswith(shown_name(path)[:30]), (message, path)  # says which file


# -- a GPU that is full (simulated) ----------------------------------------------------------


def pretend_gpu_that_is_full(clf) -> list[str]:
    """Make ``clf`` believe its model sits on an accelerator whose memory is exhausted: the
    batch is sent to a non-CPU device (``meta``), and the model's first layer raises
    PyTorch's own OutOfMemoryError for any input that is not on the CPU.  Returns the list of
    devices the model was really asked to run on."""
    import torch

    seen: list[str] = []

    def full(module, args):
        seen.append(args[0].device.type)
        if args[0].device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    clf.device = torch.device("meta")
    clf.module.register_forward_pre_hook(full)
    return seen


def every_classifier_on_a_full_gpu(monkeypatch) -> None:
    """Every classifier loaded from now on (CLI, window) pretends to sit on a full GPU."""
    from vit_desktop.core import classifier as classifier_mod

    real = classifier_mod.load_classifier

    def on_a_full_gpu(*args, **kwargs):
        clf = real(*args, **kwargs)
        pretend_gpu_that_is_full(clf)
        return clf

    monkeypatch.setattr(classifier_mod, "load_classifier", on_a_full_gpu)


# -- a weights server on 127.0.0.1 ------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 4096 * 3  # 3 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1, and no request lines in the test output (every test server's base)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def empty(self, status: int, location: str | None = None) -> None:
        """An answer with no body (an error status, or a redirect to ``location``)."""
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class WeightsHandler(QuietHandler):
    def do_GET(self):  # noqa: N802
        server = self.server
        server.hits += 1
        mode = self.path.strip("/").split("/")[0]
        body = PAYLOAD
        if mode == "redirect":
            self.empty(302, "/ok/file.pth")
            return
        if mode == "missing":
            self.empty(404)
            return
        if mode == "wrong":
            body = PAYLOAD[::-1]
        self.send_response(200)
        declared = len(body) // 2 if mode == "more" else len(body)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        try:
            if mode == "drop":
                self.wfile.write(body[: len(body) // 3])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if mode == "stall":
                self.wfile.write(body[:65536])
                self.wfile.flush()
                server.release.wait(10)
                return
            if mode == "slow":
                for i in range(0, len(body), 65536):
                    self.wfile.write(body[i : i + 65536])
                    self.wfile.flush()
                    time.sleep(0.01)
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # clients that hang up are expected here
        pass


@contextlib.contextmanager
def serving(handler: type[QuietHandler] | None = None, tls=None, hits=0):
    """A test server on 127.0.0.1 (by default the weights server: modes in the path: ok,
    stall, drop, wrong, …); ``tls`` an SSL context to serve https; ``release`` ends stalls."""
    srv = QuietServer(("127.0.0.1", 0), handler or WeightsHandler)
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    srv.hits = hits
    srv.release = threading.Event()
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


def weights_entry(url: str, sha: str = DIGEST, filename: str = "test-weights-0000.pth") -> ModelEntry:
    from vit_desktop.core.preprocess import Preprocessing

    pre = Preprocessing(input_size=(32, 32), patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    return ModelEntry(
        id="test-model", display_name="Test model", group="Test", architecture="torchvision:vit_b_16",
        params=1, preprocessing=pre, labels=("a", "b"), url=url, sha256=sha, filename=filename,
    )  # fmt: skip


# -- models ------------------------------------------------------------------------------------


def small_torchvision_vit(**kw):
    """A small torchvision VisionTransformer with a non-zero random head (torchvision's is
    all zeros, which would make logit comparisons vacuous), in eval mode."""
    import torch
    from torch import nn
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    args = dict(
        image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=96, num_classes=7
    )
    args.update(kw)
    m = VisionTransformer(**args)
    nn.init.normal_(m.heads.head.weight, std=0.3)
    return m.eval()
