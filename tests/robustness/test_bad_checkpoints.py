"""Checkpoints from strangers: every bad file is one clear CheckpointError, and nothing in a
file ever runs.  (Empty, random, truncated, wrong-architecture and wrong-shape files, the
bad safetensors header and the basic code-running pickle are in tests/core/test_checkpoints.py.)
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file
from torchvision.models.vision_transformer import VisionTransformer

from vit_desktop.core.checkpoints import load_checkpoint
from vit_desktop.core.classifier import Classifier
from vit_desktop.core.errors import CheckpointError


def tiny_state(num_classes: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    m = VisionTransformer(
        image_size=32,
        patch_size=16,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=48,
        num_classes=num_classes,
    )
    torch.nn.init.normal_(m.heads.head.weight, std=0.3)
    return {k: v.clone() for k, v in m.state_dict().items()}


def _edit(**changes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        sd = tiny_state()
        for key, value in changes.items():
            sd[key.replace("__", ".")] = value
        path = folder / "model.pth"
        torch.save(sd, path)
        return path

    return make


def _safetensors_with(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        sd = tiny_state()
        edit(sd)
        path = folder / "model.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path

    return make


def _raw(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def _header(obj: dict, tail: bytes = b"") -> bytes:
    text = json.dumps(obj).encode()
    return len(text).to_bytes(8, "little") + text + tail


def _labels(text: str | None = None, js: object = None, classes: int = 5) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "named.pth"
        torch.save(tiny_state(classes), path)
        if text is not None:
            (folder / "named.labels.txt").write_bytes(text.encode("latin-1"))
        if js is not None:
            (folder / "named.labels.json").write_text(json.dumps(js))
        return path

    return make


def _fifo(folder: Path) -> Path:
    path = folder / "stream.pth"
    os.mkfifo(path)
    return path


def _folder(folder: Path) -> Path:
    path = folder / "weights.pth"
    path.mkdir()
    return path


def _nan(sd: dict) -> None:
    sd["heads.head.weight"][0, 0] = float("inf")


BAD_CHECKPOINTS = {
    # wrong class count: the head's weight says 5 classes, its bias 7
    "wrong-class-count": (_edit(heads__head__bias=torch.zeros(7)), "does not fit"),
    "zero-classes": (
        _edit(heads__head__weight=torch.zeros(0, 32), heads__head__bias=torch.zeros(0)),
        "empty model",
    ),
    "zero-width": (_edit(conv_proj__weight=torch.zeros(0, 3, 16, 16)), "empty model"),
    "zero-patch": (_edit(conv_proj__weight=torch.zeros(32, 3, 0, 0)), "empty model"),
    "no-patch-positions": (_edit(encoder__pos_embedding=torch.zeros(1, 1, 32)), "no patch positions"),
    "flat-position-table": (_edit(encoder__pos_embedding=torch.zeros(32)), "dimensions"),
    "nan-weights": (_edit(heads__head__weight=torch.full((5, 32), float("nan"))), "NaN"),
    "inf-weights-safetensors": (_safetensors_with(_nan), "NaN or infinite"),
    # finite weights, but so large that every activation overflows
    "weights-that-overflow": (_edit(conv_proj__weight=tiny_state()["conv_proj.weight"] * 1e30), "overflow"),
    "safetensors-huge-header-length": (
        _raw("h.safetensors", (1 << 62).to_bytes(8, "little") + b"{}"),
        "safetensors",
    ),
    "safetensors-offsets-past-the-end": (
        _raw(
            "o.safetensors",
            _header(
                {"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40_000_000_000]}},
                b"\0" * 16,
            ),
        ),
        "safetensors",
    ),
    "safetensors-random-bytes": (_raw("r.safetensors", np.random.default_rng(2).bytes(3000)), "safetensors"),
    "safetensors-empty": (_raw("e.safetensors", b""), "empty"),
    "labels-txt-one-short": (_labels(text="a\nb\nc\nd\n"), "4 labels but .* 5 classes"),
    "labels-txt-one-extra": (_labels(text="a\nb\nc\nd\ne\nf"), "6 labels but .* 5 classes"),
    "labels-json-gap-in-numbers": (
        _labels(js={"0": "a", "1": "b", "2": "c", "3": "d", "5": "f"}),
        "4 is missing",
    ),
    "labels-json-wrong-count": (_labels(js=["a", "b"]), "2 labels but .* 5 classes"),
    "labels-txt-not-utf8": (_labels(text="caf\xe9\n" * 5), "could not be read"),
    "folder-named-pth": (_folder, "folder"),
}
if hasattr(os, "mkfifo"):
    BAD_CHECKPOINTS["pipe-named-pth"] = (_fifo, "not a regular file")


# -- the files beside a checkpoint: pipes, devices, huge files (these hung or filled memory) ---


def _beside(suffix: str, make_side: Callable[[Path], None], model: str = "tv") -> Callable[[Path], Path]:
    """A good checkpoint ``named.pth`` (torchvision or minimal ViT) with ``named{suffix}`` made
    by ``make_side`` next to it."""

    def make(folder: Path) -> Path:
        path = folder / "named.pth"
        torch.save(tiny_state() if model == "tv" else mini_state(), path)
        make_side(folder / f"named{suffix}")
        return path

    return make


def _text(text: str) -> Callable[[Path], None]:
    return lambda p: p.write_text(text, encoding="utf-8")


def _config(obj: object) -> Callable[[Path], None]:
    return _text(json.dumps(obj))


def _sparse(size: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        with open(p, "wb") as f:
            f.truncate(size)  # a hole: no disk used, but the size is real

    return make


def mini_state() -> dict[str, torch.Tensor]:
    from vit_desktop.core.minivit import MiniViT, MiniViTConfig

    torch.manual_seed(0)
    cfg = MiniViTConfig(image_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=1, num_heads=2,
                        mlp_dim=48)  # fmt: skip
    return {k: v.clone() for k, v in MiniViT(cfg).state_dict().items()}


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


if hasattr(os, "mkfifo"):
    BAD_CHECKPOINTS |= {
        "labels-txt-is-a-pipe": (_beside(".labels.txt", os.mkfifo), "named.labels.txt is a pipe"),
        "labels-json-is-a-pipe": (_beside(".labels.json", os.mkfifo), "named.labels.json is a pipe"),
        "config-is-a-pipe": (_beside(".config.json", os.mkfifo), "named.config.json is a pipe"),
    }
if os.path.exists("/dev/zero") and os.path.exists("/dev/urandom"):
    BAD_CHECKPOINTS |= {
        "labels-linked-to-dev-zero": (
            _beside(".labels.txt", lambda p: p.symlink_to("/dev/zero")),
            "is a device",
        ),
        "config-linked-to-dev-urandom": (
            _beside(".config.json", lambda p: p.symlink_to("/dev/urandom")),
            "is a device",
        ),
    }
BAD_CHECKPOINTS |= {
    "labels-txt-500-mb": (_beside(".labels.txt", _sparse(500_000_000)), "too large"),
    "labels-txt-just-over-16-mb": (_beside(".labels.txt", _sparse(16 * 1024 * 1024 + 1)), "too large"),
    "config-just-over-1-mb": (_beside(".config.json", _sparse(1024 * 1024 + 1)), "too large"),
    "labels-folder": (_beside(".labels.json", lambda p: p.mkdir()), "is a folder"),
    # -- settings and labels of the wrong type, length or range ---------------------------------
    "resize-size-60000": (_beside(".config.json", _config({"preprocessing": {"resize_size": 60000}})),
                          "resize size 60000 is outside 32…8192"),
    "input-size-a-one-item-list": (_beside(".config.json", _config({"preprocessing": {"input_size": [128]}})),
                                   "input_size must be a whole number or"),
    "input-size-5000": (_beside(".config.json", _config({"preprocessing": {"input_size": 5000}})),
                        "outside 1…4096"),
    "mean-a-string": (_beside(".config.json", _config({"preprocessing": {"mean": "abc"}})), "mean must be three"),
    "std-zero": (_beside(".config.json", _config({"preprocessing": {"std": [0.2, 0, 0.2]}})), "std values must"),
    "std-two-numbers": (_beside(".config.json", _config({"preprocessing": {"std": [0.2, 0.2]}})),
                        "std must be three"),
    "patch-size-zero": (_beside(".config.json", _config({"preprocessing": {"patch_size": 0}})), "patch size"),
    "mode-a-list": (_beside(".config.json", _config({"preprocessing": {"mode": ["letterbox"]}})), "mode must be"),
    "preprocessing-a-list": (_beside(".config.json", _config({"preprocessing": [1]})), "expected a JSON object"),
    "num-heads-zero": (_beside(".config.json", _config({"num_heads": 0})), "num_heads must be at least 1"),
    "num-heads-true": (_beside(".config.json", _config({"num_heads": True})), "num_heads must be a whole number"),
    "norm-first-a-string": (_beside(".config.json", _config({"norm_first": "false"}), "mini"),
                            "norm_first must be true or false"),
    "input-norm-a-number": (_beside(".config.json", _config({"input_norm": 1}), "mini"), "input_norm must be"),
    "layer-norm-eps-a-string": (_beside(".config.json", _config({"layer_norm_eps": "abc"}), "mini"),
                                "layer_norm_eps must be a number"),
    "stem-strides-a-string": (_beside(".config.json", _config({"stem_strides": "22"}), "mini"), "stem_strides"),
    "config-nested-100000-deep": (_beside(".config.json", _text('{"x": ' + _deep(100_000) + "}")), "nested"),
    "labels-json-nested-100000-deep": (_beside(".labels.json", _text(_deep(100_000))), "nested 100,000 levels"),
    "labels-json-a-nested-label": (_labels(js=["a", ["b"], "c", "d", "e"]), "label 1 is list"),
    "labels-json-a-null-label": (_labels(js=["a", "b", None, "d", "e"]), "label 2 is null"),
    "labels-json-a-true-label": (_labels(js=["a", "b", "c", True, "e"]), "label 3 is bool"),
    "labels-json-a-string": (_labels(js="abcde"), "expected a list of labels"),
    "labels-json-index-not-a-number": (_labels(js={"0": "a", "x": "b"}), "must be class numbers"),
    "labels-txt-a-label-of-5000-characters": (_labels(text="a\nb\n" + "c" * 5000 + "\nd\ne\n"),
                                              "line 3 is 5,000 characters long"),
    "labels-txt-a-million-lines": (_labels(text="x\n" * 1_000_000), "1,000,000 labels but .* 5 classes"),
}  # fmt: skip


# -- memory: what a file declares is checked against what it holds, before allocating ---------


def _saved(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        sd = tiny_state()
        edit(sd)
        path = folder / "model.pth"
        torch.save(sd, path)
        return path

    return make


def _deflated(extra: dict[str, torch.Tensor]) -> Callable[[Path], Path]:
    """What torch.save writes, with its records DEFLATE-compressed (torch never does this,
    and torch.load inflates them whole)."""

    def make(folder: Path) -> Path:
        buf = io.BytesIO()
        torch.save({**tiny_state(), **extra}, buf)
        path = folder / "zipped.pth"
        with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
            for rec in src.infolist():
                dst.writestr(rec.filename, src.read(rec.filename))
        return path

    return make


def _expand_conv(sd: dict) -> None:
    sd["conv_proj.weight"] = torch.zeros(1).expand(32, 3, 16, 16)  # the right shape, one stored value


def _repeat_views(sd: dict) -> None:
    shared = torch.zeros(256 * 1024)  # 1 MB stored once, viewed by 64 keys
    sd.update({f"extra.{i}": shared[:] for i in range(64)})


def _deep_layers(sd: dict) -> None:
    sd["encoder.layers.encoder_layer_5000.ln_1.weight"] = torch.ones(32)  # 5,001 layers, one present


BAD_CHECKPOINTS |= {
    "expanded-view-of-one-value": (_saved(_expand_conv), "conv_proj.weight is an expanded view"),
    "one-storage-viewed-64-times": (_saved(_repeat_views), r"declare 67\.\d MB in a file of 1\.\d MB"),
    "deflate-compressed-records": (_deflated({}), "is compressed, which torch.save never does"),
    "deflate-bomb-64-mb-of-zeros": (_deflated({"pad": torch.zeros(16 * 1024 * 1024)}), "is compressed"),
    "a-layer-name-declaring-5001-layers": (_saved(_deep_layers), "needs [0-9,]+ parameters, the file holds"),
    "safetensors-shape-larger-than-its-bytes": (
        _raw("s.safetensors", _header({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}},
                                      b"\0" * 16)),
        "w declares 1000×1000 F32 values in bytes 0–16",
    ),
    "safetensors-header-entry-malformed": (
        _raw("m.safetensors", _header({"w": {"dtype": "F32", "shape": "big", "data_offsets": [0, 4]}}, b"\0" * 4)),
        "the header entry of w is malformed",
    ),
}  # fmt: skip


def _load_within(seconds: float, path, what: str, **kw) -> dict:
    """``load_checkpoint`` on a thread: {"value": …} or {"error": …}; a hang fails the test."""
    out: dict = {}

    def go() -> None:
        try:
            out["value"] = load_checkpoint(path, **kw)
        except BaseException as exc:  # noqa: BLE001 - judged by the caller
            out["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"load_checkpoint hung on {what}"
    return out


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_table(tmp_path, case):
    make, pattern = BAD_CHECKPOINTS[case]
    path = make(tmp_path)
    out = _load_within(30, path, what=case)
    err = out.get("error")
    assert isinstance(err, CheckpointError), f"{case}: {out}"
    line = err.one_line()
    assert "\n" not in line and len(line) < 400 and "Traceback" not in line
    import re

    assert re.search(pattern, line), (case, line)


def test_good_labels_still_load_in_order(tmp_path):
    # The refusals above are not refusing everything: the same files with right labels load.
    path = _labels(js={"1": "b", "0": "a", "4": "e", "3": "d", "2": "c"})(tmp_path)
    assert load_checkpoint(path).labels == ("a", "b", "c", "d", "e")


# -- files that try to run code ---------------------------------------------------------------


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint carries."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payloads(marker: Path) -> dict[str, object]:
    import builtins

    write = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.exec": _Payload(builtins.exec, write),
        "builtins.eval": _Payload(builtins.eval, write),
        "subprocess.Popen": _Payload(subprocess.Popen, ["touch", str(marker)]),
        # Importing a module runs it: a module beside the file that writes the marker.
        "__import__": _Payload(builtins.__import__, "evil_neighbour"),
    }


@pytest.mark.parametrize("container", ["inside-state-dict", "whole-file", "in-a-list"])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_code_running_checkpoints_are_refused_and_nothing_runs(tmp_path, monkeypatch, container, zip_format):
    marker = tmp_path / "ran"
    (tmp_path / "evil_neighbour.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, payload in _payloads(marker).items():
        obj = {
            "inside-state-dict": {"state_dict": {**tiny_state(), "evil": payload}},
            "whole-file": payload,
            "in-a-list": [torch.zeros(3), {"x": payload}],
        }[container]
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        with pytest.raises(CheckpointError, match="refused by the safe loader"):
            load_checkpoint(path)
        assert not marker.exists(), f"{name} ran"
    # Sanity: the payloads do run when unpickled without protection.
    import pickle

    pickle.loads(pickle.dumps(_Payload(os.system, f"touch {marker}")))
    assert marker.exists()


def test_refusal_names_what_the_file_holds(tmp_path):
    """A training checkpoint with its command-line arguments inside: harmless here, but the
    safe loader cannot tell; the sentence says what it found so the person knows what to strip."""
    import argparse

    path = tmp_path / "run.pth"
    torch.save({"model": tiny_state(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"refused .*\(argparse\.Namespace\)"):
        load_checkpoint(path)
    torch.save({"model": tiny_state(), "hook": _Payload(os.system, "true")}, path)
    with pytest.raises(CheckpointError, match=r"refused .*\((posix|nt)\.system\)"):
        load_checkpoint(path)


def test_command_line_refuses_a_code_running_checkpoint(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "friendly-model.pth"
    torch.save({"state_dict": tiny_state(), "hook": _Payload(os.system, f"touch {marker}")}, path)
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vit_desktop",
            "classify",
            str(image),
            "--model",
            str(path),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "friendly-model.pth" in lines[0] and "refused" in lines[0], r.stderr
    assert not marker.exists()


# -- fuzzing the architecture reader: any state dict gives a model that works, or an error ------

KEYS = sorted(tiny_state())


@st.composite
def mutated_state(draw) -> dict[str, torch.Tensor]:
    sd = tiny_state()
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(KEYS))
        op = draw(st.sampled_from(["drop", "reshape", "dtype", "rename", "scale"]))
        if key not in sd:
            continue
        if op == "drop":
            del sd[key]
        elif op == "reshape":
            shape = draw(st.lists(st.integers(0, 40), min_size=0, max_size=4))
            sd[key] = torch.randn(*shape) if shape else torch.tensor(1.0)
        elif op == "dtype":
            sd[key] = sd[key].to(
                draw(st.sampled_from([torch.float16, torch.bfloat16, torch.int64, torch.bool]))
            )
        elif op == "rename":
            sd[key.replace("encoder_layer_0", "encoder_layer_" + str(draw(st.integers(1, 3))))] = sd.pop(key)
        else:
            sd[key] = sd[key] * draw(st.sampled_from([0.0, 1e30, -1.0]))
    return sd


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(state=mutated_state())
def test_fuzzed_state_dicts_give_a_working_model_or_a_checkpoint_error(tmp_path, state):
    path = tmp_path / "fuzz.pth"
    torch.save(state, path)
    try:
        built = load_checkpoint(path)
    except CheckpointError as exc:
        assert "\n" not in exc.one_line()
        return
    clf = Classifier(built.module, built.preprocessing, built.labels, "fuzz", "fuzz", torch.device("cpu"))
    (res,) = clf.classify(Image.new("RGB", (50, 30), (90, 160, 30)), attention="full")
    assert len(res.probs) == len(built.labels) and np.isfinite(res.probs).all()
    assert abs(float(res.probs.sum()) - 1) < 1e-3


# -- memory, beyond the table ------------------------------------------------------------------


def test_a_3_kb_file_of_expanded_views_declaring_a_width_8192_model_is_refused_before_building(tmp_path):
    """Every tensor a zero-stride view of one stored value: torch.save keeps the small
    storage, so the file is tiny but declares a 8192-wide model (gigabytes once built)."""
    sd = {k: torch.zeros(1, dtype=v.dtype).expand(*_wide(k, v.shape)) for k, v in tiny_state().items()}
    path = tmp_path / "wide.pth"
    torch.save(sd, path)
    assert path.stat().st_size < 10_000
    with pytest.raises(
        CheckpointError, match=r"is an expanded view \(.*\) that would need [0-9.,]+ (bytes|MB|GB)"
    ):
        load_checkpoint(path)


def _wide(key: str, shape: torch.Size) -> tuple[int, ...]:
    return tuple(8192 if n == 32 else 4 * 8192 if n == 48 else n for n in shape)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_parameter_cap_names_its_setting(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save(tiny_state(), path)
    else:
        save_file({k: v.contiguous() for k, v in tiny_state().items()}, str(path))
    assert load_checkpoint(path).labels  # under the default cap it loads
    monkeypatch.setenv("VIT_DESKTOP_MAX_PARAMS", "20000")
    with pytest.raises(CheckpointError, match=r"above the limit of 0 million .* set VIT_DESKTOP_MAX_PARAMS"):
        load_checkpoint(path)
    monkeypatch.setenv("VIT_DESKTOP_MAX_PARAMS", "1e7")
    assert load_checkpoint(path).labels
    monkeypatch.setenv("VIT_DESKTOP_MAX_PARAMS", "lots")
    with pytest.raises(CheckpointError, match="VIT_DESKTOP_MAX_PARAMS=lots is not a parameter count"):
        load_checkpoint(path)


_ALLOCATOR = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 268435456 bytes."


@pytest.mark.parametrize("where", ["finite-check", "build", "probe", "torch.load"])
@pytest.mark.parametrize(
    "error", [MemoryError, lambda: RuntimeError(_ALLOCATOR)], ids=["MemoryError", "allocator"]
)
def test_running_out_of_memory_anywhere_is_a_checkpoint_error(tmp_path, monkeypatch, where, error):
    from torchvision.models import vision_transformer

    path = tmp_path / "model.pth"
    torch.save(tiny_state(), path)

    def fail(*args, **kwargs):
        raise error()

    target = {"finite-check": (torch, "isfinite"), "build": (vision_transformer.VisionTransformer, "__init__"),
              "probe": (vision_transformer.VisionTransformer, "forward"), "torch.load": (torch, "load")}[where]  # fmt: skip
    monkeypatch.setattr(*target, fail)
    with pytest.raises(CheckpointError, match="not enough memory") as err:
        load_checkpoint(path)
    assert "\n" not in err.value.one_line()


def test_an_allocation_failure_in_torch_load_is_memory_not_damage(tmp_path, monkeypatch):
    """A cached download that hits the allocator must not be removed as "damaged"."""
    from vit_desktop.core.checkpoints import SafeLoadError, safe_torch_load

    path = tmp_path / "model.pth"
    torch.save(tiny_state(), path)

    def fail(*args, **kwargs):
        raise RuntimeError(_ALLOCATOR)

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(SafeLoadError) as err:
        safe_torch_load(path)
    assert err.value.kind == "memory"


# -- a labels file chosen apart: the same rules as the ones beside the checkpoint --------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("kind", ["pipe", "dev-zero", "folder", "sparse-500-mb", "deep-json"])
def test_a_chosen_labels_file_that_is_not_a_small_regular_file(tmp_path, kind):
    path = tmp_path / "named.pth"
    torch.save(tiny_state(), path)
    chosen = tmp_path / ("names.json" if kind == "deep-json" else "names.txt")
    if kind == "pipe":
        os.mkfifo(chosen)
    elif kind == "dev-zero":
        chosen.symlink_to("/dev/zero")
    elif kind == "folder":
        chosen.mkdir()
    elif kind == "sparse-500-mb":
        _sparse(500_000_000)(chosen)
    else:
        chosen.write_text(_deep(100_000))
    expected = {"pipe": "is a pipe", "dev-zero": "is a device", "folder": "is a folder",
                "sparse-500-mb": "too large", "deep-json": "nested"}[kind]  # fmt: skip
    out = _load_within(30, path, what=f"a chosen {kind} labels file", labels=chosen)
    assert isinstance(out.get("error"), CheckpointError), out
    assert expected in out["error"].one_line() and "names." in out["error"].one_line()


def test_good_settings_and_labels_still_load(tmp_path):
    """The checks refuse the bad, not everything: a full, valid config and labels load."""
    path = _beside(".config.json", _config({
        "num_heads": 2,
        "preprocessing": {"input_size": [32, 32], "resize_size": 36, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.2, 1],
                          "mode": "resize_crop", "interpolation": "bicubic", "patch_size": 16},
    }))(tmp_path)  # fmt: skip
    (tmp_path / "named.labels.json").write_text(
        json.dumps({"0": "a", "1": 2, "2": 3.5, "3": "d" * 1000, "4": ""})
    )
    built = load_checkpoint(path)
    assert built.labels == ("a", "2", "3.5", "d" * 1000, "")
    assert built.preprocessing.std == (0.25, 0.2, 1.0) and built.preprocessing.resize_size == 36
    (tmp_path / "m").mkdir()
    mini_config = {"norm_first": True, "input_norm": False, "layer_norm_eps": 1e-6, "num_heads": 4}
    mini = _beside(".config.json", _config(mini_config), "mini")(tmp_path / "m")
    assert load_checkpoint(mini).family == "minivit"
