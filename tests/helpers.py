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
import pytest
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


@contextlib.contextmanager
def served_demo_backbone(model_id: str, display_name: str, filename: str):
    """A catalog entry (registered while the block runs) whose weights are the demo model's,
    saved as a ``.pth`` and served from 127.0.0.1: a downloadable backbone to teach on.
    Yields the server (its ``hits``) and the entry."""
    import io

    import torch

    from vit_desktop.core import catalog
    from vit_desktop.core.classifier import load_classifier

    buf = io.BytesIO()
    torch.save(load_classifier("demo-shapes", "cpu").module.state_dict(), buf)
    body = buf.getvalue()

    class DemoWeights(QuietHandler):
        def do_GET(self):  # noqa: N802
            self.server.hits += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(DemoWeights) as srv:
        demo = catalog.get("demo-shapes")
        entry = ModelEntry(
            id=model_id, display_name=display_name, group="Test", architecture="minivit", params=1,
            preprocessing=demo.preprocessing, labels=demo.labels,
            url=f"http://127.0.0.1:{srv.server_port}/w/{filename}",
            sha256=hashlib.sha256(body).hexdigest(), filename=filename,
        )  # fmt: skip
        catalog.register(entry)
        try:
            yield srv, entry
        finally:
            catalog.unregister(entry.id)


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


# -- a Hugging Face Hub on 127.0.0.1 ------------------------------------------------------------


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubState:
    """What the fake Hub serves (``repos``: repo id -> {file name: bytes}; names ending in
    .safetensors/.bin are LFS files, served from a second "CDN" server as the Hub does) and
    what it was asked (``requests``: (method, path)).  ``wrong``: LFS names served with other
    bytes of the same length; ``stall_after``: bytes of an LFS file sent before the server
    waits for ``release``; ``pace``: seconds between two 64 KiB pieces of an LFS file;
    ``errors``: repo id -> (status, X-Error-Code) for every request."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.commits = {r: hashlib.sha1(r.encode()).hexdigest() for r in repos}
        self.requests: list[tuple[str, str]] = []
        self.wrong: set[str] = set()
        self.stall_after: int | None = None
        self.pace = 0.0
        self.errors: dict[str, tuple[int, str]] = {}
        self.release = threading.Event()
        self.cdn = ""

    @staticmethod
    def is_lfs(name: str) -> bool:
        return name.endswith((".safetensors", ".bin"))

    def blob(self, sha: str) -> tuple[str, bytes] | None:
        for files in self.repos.values():
            for name, data in files.items():
                if hashlib.sha256(data).hexdigest() == sha:
                    return name, data
        return None

    def sibling(self, name: str, data: bytes) -> dict:
        if not self.is_lfs(name):
            return {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
        sha = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
        lfs = {"size": len(data), "sha256": sha, "pointerSize": len(pointer)}
        return {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(pointer), "lfs": lfs}


class HubHandler(QuietHandler):
    """The endpoints huggingface_hub uses to download: the model info API (with blobs), HEAD
    and GET of /ORG/NAME/resolve/REV/FILE, and the CDN a large file is redirected to."""

    def do_HEAD(self):  # noqa: N802
        self.answer(head=True)

    def do_GET(self):  # noqa: N802
        self.answer(head=False)

    def send(self, status: int, headers: dict, body: bytes, head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def answer(self, head: bool) -> None:
        import json
        from urllib.parse import unquote, urlsplit

        hub: HubState = self.server.hub
        path = unquote(urlsplit(self.path).path)
        hub.requests.append((self.command, path))
        parts = path.strip("/").split("/")
        if parts[0] == "lfs":
            return self.lfs(hub, parts[1], head)
        api = parts[:2] == ["api", "models"]
        repo_id = "/".join(parts[2:4] if api else parts[:2])
        if repo_id in hub.errors or repo_id not in hub.repos:
            status, code = hub.errors.get(repo_id, (404, "RepoNotFound"))
            return self.send(status, {"X-Error-Code": code}, b"", head)
        files, commit = hub.repos[repo_id], hub.commits[repo_id]
        if api:
            siblings = [hub.sibling(n, d) for n, d in files.items()]
            body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": siblings})
            return self.send(200, {"Content-Type": "application/json"}, body.encode(), head)
        name = "/".join(parts[4:])
        if parts[2] != "resolve" or name not in files:
            return self.send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"", head)
        data = files[name]
        if not hub.is_lfs(name):
            return self.send(200, {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": commit}, data, head)
        sha = hashlib.sha256(data).hexdigest()
        headers = {"Location": f"{hub.cdn}/lfs/{sha}", "X-Repo-Commit": commit, "X-Linked-Etag": f'"{sha}"',
                   "X-Linked-Size": str(len(data)), "ETag": f'"{hub.sibling(name, data)["blobId"]}"'}  # fmt: skip
        self.send(302, headers, b"", head)

    def lfs(self, hub: HubState, sha: str, head: bool) -> None:
        found = hub.blob(sha)
        if found is None:
            return self.send(404, {}, b"", head)
        name, data = found
        if name in hub.wrong:
            data = data[::-1]
        if (hub.stall_after is None and not hub.pace) or head:
            return self.send(200, {}, data, head)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(0, len(data), 1 << 16):
                if hub.stall_after is not None and i >= hub.stall_after:
                    hub.release.wait(20)
                self.wfile.write(data[i : i + (1 << 16)])
                self.wfile.flush()
                time.sleep(hub.pace)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextlib.contextmanager
def fake_hub(repos: dict[str, dict[str, bytes]]):
    """A Hugging Face Hub (and its CDN) on 127.0.0.1: yields (endpoint URL, HubState)."""
    state = HubState(repos)
    with serving(HubHandler) as hub_srv, serving(HubHandler) as cdn_srv:
        hub_srv.hub = cdn_srv.hub = state
        state.cdn = f"http://127.0.0.1:{cdn_srv.server_address[1]}"
        try:
            yield f"http://127.0.0.1:{hub_srv.server_address[1]}", state
        finally:
            state.release.set()


HF_VIT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32,
              patch_size=16, num_channels=3)  # fmt: skip


def hf_vit_files(folder, num_labels: int = 5, seed: int = 0) -> None:
    """A small ViT classifier as transformers saves it to the Hub (config.json,
    model.safetensors, preprocessor_config.json; random weights), written without importing
    transformers or torch (tests/core/test_hub.py has transformers load it)."""
    import json

    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    d, ff, p = HF_VIT["hidden_size"], HF_VIT["intermediate_size"], HF_VIT["patch_size"]
    n = (HF_VIT["image_size"] // p) ** 2 + 1
    shapes = {"vit.embeddings.cls_token": (1, 1, d), "vit.embeddings.position_embeddings": (1, n, d),
              "vit.embeddings.patch_embeddings.projection.weight": (d, 3, p, p),
              "vit.embeddings.patch_embeddings.projection.bias": (d,),
              "vit.layernorm.weight": (d,), "vit.layernorm.bias": (d,),
              "classifier.weight": (num_labels, d), "classifier.bias": (num_labels,)}  # fmt: skip
    for i in range(HF_VIT["num_hidden_layers"]):
        b = f"vit.encoder.layer.{i}."
        for name in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                     "attention.output.dense"):  # fmt: skip
            shapes |= {b + name + ".weight": (d, d), b + name + ".bias": (d,)}
        shapes |= {b + "intermediate.dense.weight": (ff, d), b + "intermediate.dense.bias": (ff,),
                   b + "output.dense.weight": (d, ff), b + "output.dense.bias": (d,)}  # fmt: skip
        for name in ("layernorm_before", "layernorm_after"):
            shapes |= {b + name + ".weight": (d,), b + name + ".bias": (d,)}
    state = {
        k: (rng.standard_normal(s) * (0.02 if len(s) > 1 else 0.1)).astype(np.float32)
        for k, s in shapes.items()
    }
    state["classifier.weight"] *= 25  # logits far enough apart to compare
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    labels = {str(i): f"thing {i}" for i in range(num_labels)}
    config = {"architectures": ["ViTForImageClassification"], "model_type": "vit", **HF_VIT, "qkv_bias": True,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "id2label": labels,
              "label2id": {v: int(k) for k, v in labels.items()}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    pre = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5] * 3,
           "image_processor_type": "ViTImageProcessor", "image_std": [0.5] * 3, "resample": 2,
           "rescale_factor": 1 / 255, "size": {"height": 32, "width": 32}}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread for a test module (import it there): these models are small (or run
    once), and on a loaded machine two threads waiting for each other on every small op cost
    more than they give."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
