"""Opening models from the Hugging Face Hub (``hf:ORG/NAME``): against a Hub on 127.0.0.1 that
serves a small transformers ViT the way huggingface_hub downloads it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import fake_hub, hf_vit_files
from vit_desktop.core import hub
from vit_desktop.core.errors import (
    ChecksumError,
    CorruptCacheError,
    DownloadCancelled,
    ModelNotFoundError,
    OfflineError,
    WeightsError,
)

REPO = "org/tiny-vit"
FETCHED = {"config.json", "preprocessor_config.json", "model.safetensors"}


@pytest.fixture(scope="module")
def tiny():
    """A repository's files: what a model needs (the weights' bytes are all the download
    checks look at) and some the app must never fetch."""
    rng = np.random.default_rng(0)
    return {
        "config.json": json.dumps({"model_type": "vit", "hidden_size": 64}).encode(),
        "preprocessor_config.json": json.dumps({"size": {"height": 32, "width": 32}}).encode(),
        "model.safetensors": rng.integers(0, 256, 600_000, dtype=np.uint8).tobytes(),
        "pytorch_model.bin": b"\x80\x02pickled weights",
        "modeling_vit.py": b"raise SystemExit('code from a model repository ran')\n",
        "README.md": b"# tiny\n",
    }


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private Hugging Face cache, no token, online."""
    from huggingface_hub import constants

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    return tmp_path / "hf" / "hub"


def _storage(cache: Path, repo: str = REPO) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def _leftovers(cache: Path) -> list[str]:
    return [p.name for p in cache.rglob("*") if p.name.endswith(".incomplete")]


def _nobody_listening() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text and len(text) < 300 and "Traceback" not in text, text
    return text


def _weights_blob(cache: Path, files: dict) -> Path:
    return _storage(cache) / "blobs" / hashlib.sha256(files["model.safetensors"]).hexdigest()


def test_download_brings_only_config_and_safetensors(env, tiny, monkeypatch):
    files = tiny
    seen = []
    with fake_hub({REPO: files}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        folder = hub.fetch(hub.parse(f"hf:{REPO}"), progress=lambda d, t: seen.append((d, t)))
    assert {p.name for p in folder.iterdir()} == FETCHED
    for name in FETCHED:
        assert (folder / name).read_bytes() == files[name]
    asked = {path.rsplit("/", 1)[-1] for _, path in state.requests}
    assert not {n for n in asked if n.endswith((".bin", ".py", ".md"))}, state.requests
    assert {"config.json", "model.safetensors"} <= asked
    total = sum(len(files[n]) for n in FETCHED)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert all(b >= a for (a, _), (b, _) in zip(seen, seen[1:]))
    assert (_storage(env) / "refs" / "main").read_text() == state.commits[REPO]
    assert not _leftovers(env)


def test_second_open_downloads_nothing_and_offline_uses_the_cache(env, tiny, monkeypatch):
    files = tiny
    ref = hub.parse(f"hf:{REPO}")
    with fake_hub({REPO: files}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        first = hub.fetch(ref)
        state.requests.clear()
        assert hub.fetch(ref) == first
        assert [m for m, p in state.requests if "/resolve/" in p or p.startswith("/lfs/")] == []
        state.requests.clear()
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert hub.fetch(ref) == first
        assert state.requests == []  # offline: not even the listing
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", _nobody_listening())  # no network
    assert hub.fetch(ref) == first
    with pytest.raises(OfflineError) as exc:
        hub.fetch(hub.parse("hf:org/never-downloaded"))
    assert "not in the Hugging Face cache" in _one_line(exc) and "no network" in str(exc.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as exc:
        hub.fetch(hub.parse("hf:org/never-downloaded"))
    assert "offline mode is on" in _one_line(exc)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(OfflineError) as exc:
        hub.fetch(hub.parse("hf:org/never-downloaded"), allow_download=False)
    assert "downloads are turned off" in _one_line(exc)


def test_a_tampered_cached_blob_is_removed_and_downloaded_again(env, tiny, monkeypatch):
    files = tiny
    ref = hub.parse(f"hf:{REPO}")
    blob = _weights_blob(env, files)
    with fake_hub({REPO: files}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        folder = hub.fetch(ref)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, one byte changed
        blob.write_bytes(bytes(data))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(CorruptCacheError) as exc:
            hub.fetch(ref)
        assert "model.safetensors" in _one_line(exc) and "removed" in str(exc.value)
        assert not blob.exists() and not (folder / "model.safetensors").exists()
        monkeypatch.delenv("HF_HUB_OFFLINE")
        state.requests.clear()
        assert hub.fetch(ref) == folder
        assert sum(p.startswith("/lfs/") for _, p in state.requests) == 1
        assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
        (folder / "config.json").resolve().write_bytes(b'{"model_type": "vit"}')  # a small file: git SHA-1
        state.requests.clear()
        hub.fetch(ref)  # online: found damaged, fetched again in the same open
        assert ("GET", f"/{REPO}/resolve/{state.commits[REPO]}/config.json") in state.requests
        assert (folder / "config.json").read_bytes() == files["config.json"]


def test_a_cache_of_copies_is_checked_against_the_kept_listing(env, tiny, monkeypatch):
    # Where links cannot be made the snapshot holds copies, not named blobs: the listing the
    # cache keeps (trees/COMMIT.json) is what they are checked against.
    files = tiny
    ref = hub.parse(f"hf:{REPO}")
    with fake_hub({REPO: files}) as (endpoint, _):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        folder = hub.fetch(ref)
    for name in FETCHED:
        data = (folder / name).read_bytes()
        (folder / name).unlink()
        (folder / name).write_bytes(
            data[:-1] + bytes([data[-1] ^ 1]) if name == "model.safetensors" else data
        )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorruptCacheError) as exc:
        hub.fetch(ref)
    assert "model.safetensors" in _one_line(exc) and not (folder / "model.safetensors").exists()


def test_wrong_bytes_from_the_server_are_refused_and_nothing_is_kept(env, tiny, monkeypatch):
    files = tiny
    with fake_hub({REPO: files}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        state.wrong.add("model.safetensors")
        with pytest.raises(ChecksumError) as exc:
            hub.fetch(hub.parse(f"hf:{REPO}"))
        assert "model.safetensors" in _one_line(exc) and "hash" in str(exc.value)
        snapshot = _storage(env) / "snapshots" / state.commits[REPO]
        assert not (snapshot / "model.safetensors").exists() and not _weights_blob(env, files).exists()
        assert not _leftovers(env)
        state.wrong.clear()
        assert (hub.fetch(hub.parse(f"hf:{REPO}")) / "model.safetensors").read_bytes() == files[
            "model.safetensors"
        ]


def test_cancel_stops_a_slow_download_and_keeps_no_part(env, monkeypatch):
    big = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    files = {"config.json": b'{"model_type": "vit"}', "model.safetensors": big}
    seen = []
    with fake_hub({"org/slow": files}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        state.stall_after = 1 << 20  # then nothing more until the test ends
        t0 = time.monotonic()
        with pytest.raises(DownloadCancelled) as exc:
            hub.fetch(hub.parse("hf:org/slow"), progress=lambda d, t: seen.append(d),
                      cancel=lambda: bool(seen) and seen[-1] > 1000)  # fmt: skip
        took = time.monotonic() - t0
        assert "cancelled" in _one_line(exc)
        assert took < 8, took  # not waiting for the stalled rest (that would be 20 s and more)
        storage = _storage(env, "org/slow")
        assert not _leftovers(env)
        assert not (storage / "blobs" / hashlib.sha256(big).hexdigest()).exists()
        assert not (storage / "snapshots" / state.commits["org/slow"] / "model.safetensors").exists()


def test_sharded_weights_come_with_their_index(env, tiny, monkeypatch):
    rng = np.random.default_rng(1)
    shards = {f"model-0000{i}-of-00002.safetensors": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
              for i in (1, 2)}  # fmt: skip
    index = {"metadata": {}, "weight_map": {"a.weight": next(iter(shards)), "b.weight": list(shards)[1]}}
    files = {"config.json": tiny["config.json"], "model.safetensors.index.json": json.dumps(index).encode(),
             **shards, "pytorch_model.bin": tiny["pytorch_model.bin"]}  # fmt: skip
    with fake_hub({"org/sharded": files}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        folder = hub.fetch(hub.parse("hf:org/sharded"))
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors.index.json", *shards}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.fetch(hub.parse("hf:org/sharded")) == folder
    (folder / list(shards)[1]).unlink()  # a shard gone from the cache: not all there
    with pytest.raises(OfflineError) as exc:
        hub.fetch(hub.parse("hf:org/sharded"))
    assert list(shards)[1] in _one_line(exc)


def test_too_little_disk_space_is_one_line_before_any_download(env, tiny, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    with fake_hub({REPO: tiny}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(WeightsError) as exc:
            hub.fetch(hub.parse(f"hf:{REPO}"))
    assert "not enough disk space" in _one_line(exc)
    assert [p for _, p in state.requests if not p.startswith("/api/")] == []


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (404, "RepoNotFound", "no model org/nope"),
        (401, "RepoNotFound", "HF_TOKEN"),
        (403, "GatedRepo", "gated"),
    ],
)
def test_hub_refusals_are_one_line(env, tiny, monkeypatch, status, code, words):
    files = tiny
    with fake_hub({REPO: files}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        state.errors["org/nope"] = (status, code)
        with pytest.raises(WeightsError) as exc:
            hub.fetch(hub.parse("hf:org/nope"))
    assert words in _one_line(exc)
    if status != 404:
        assert "HF_TOKEN" in str(exc.value)


def test_a_repository_of_pickles_only_is_refused_without_fetching_them(env, tiny, monkeypatch):
    files = tiny
    pickled = {"config.json": files["config.json"], "pytorch_model.bin": files["pytorch_model.bin"]}
    with fake_hub({"org/pickled": pickled}) as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(WeightsError) as exc:
            hub.fetch(hub.parse("hf:org/pickled"))
    assert "no safetensors weights" in _one_line(exc) and "pickled" in str(exc.value)
    assert [p for _, p in state.requests if not p.startswith("/api/")] == []


@pytest.mark.parametrize("bad", ["hf:tiny", "hf:a/b/c", "hf:../x", "hf:org/na me", "hf:org/name@", "hf:org/-x",
                                 "hf:org/x--y", "hf:org/name@main/../x", "hf:"])  # fmt: skip
def test_malformed_names_are_one_line(bad):
    with pytest.raises(ModelNotFoundError) as exc:
        hub.parse(bad)
    assert "hf:ORG/NAME" in _one_line(exc)


def test_names_and_revisions():
    ref = hub.parse("hf:facebook/deit-tiny-patch16-224@v1.0")
    assert (ref.repo_id, ref.revision, ref.text) == ("facebook/deit-tiny-patch16-224", "v1.0", ref.text)
    assert hub.parse(ref.text) == ref and hub.parse("hf:a/b").revision is None


def test_the_command_line_classifies_with_a_hub_model(env, tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    hf_vit_files(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(img)
    with fake_hub({REPO: files}) as (endpoint, _):
        run_env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(env.parent)}
        cli = subprocess.Popen([sys.executable, "-m", "vit_desktop", "classify", str(img), "--model", f"hf:{REPO}",
                                "--device", "cpu", "--format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env)  # fmt: skip
        probs, labels = _transformers_probs(folder, img)  # meanwhile: what transformers makes of it
        out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    row = json.loads(out.splitlines()[0])
    assert row["model"] == f"hf:{REPO}"
    assert row["top_k"][0]["label"] == labels[int(probs.argmax())]
    for p in row["top_k"]:
        assert p["label"] == labels[p["index"]]
        assert abs(p["prob"] - probs[p["index"]]) < 1e-4, (p, probs)


def _transformers_probs(folder: Path, img: Path) -> tuple[np.ndarray, dict[int, str]]:
    import torch
    from transformers import ViTForImageClassification, ViTImageProcessor

    model, info = ViTForImageClassification.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), (
        info
    )  # every tensor of the folder is one transformers has, and all are there
    pixels = ViTImageProcessor.from_pretrained(folder)(Image.open(img), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = model.eval()(pixel_values=pixels).logits.softmax(-1)[0].numpy()
    return probs, model.config.id2label


def test_a_cached_file_without_a_known_hash_is_left_alone_and_not_used(tmp_path):
    from vit_desktop.core import hub_cache

    storage = tmp_path / "models--org--x"
    (storage / "blobs").mkdir(parents=True)
    snap = storage / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    copy = snap / "model.safetensors"  # a plain copy another program put there: no listing, no blob name
    copy.write_bytes(b"not checked")
    assert hub_cache.damage(storage, copy, None) == hub_cache.UNVERIFIED
    assert copy.read_bytes() == b"not checked"
    wrong = hub_cache.Want("sha256", "0" * 64)
    assert "damaged" in hub_cache.damage(storage, copy, wrong)
    assert not copy.exists()  # proven damaged: removed
