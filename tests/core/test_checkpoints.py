"""Local checkpoints: safe loading, architecture inference, labels, clear refusals."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.helpers import small_torchvision_vit as _tv
from vit_desktop.core.checkpoints import load_checkpoint
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.errors import CheckpointError


def _same_outputs(a: nn.Module, b: nn.Module, size: int) -> None:
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    assert ya.abs().max() > 0.05
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(image_size=96, patch_size=8, num_layers=3, hidden_dim=48, num_heads=3, mlp_dim=80),
    dict(image_size=56, patch_size=14, num_layers=1, hidden_dim=64, num_classes=3),
])  # fmt: skip
def test_torchvision_state_dicts_of_any_size(tmp_path, kw):
    ref = _tv(**kw)
    path = tmp_path / "model.pth"
    torch.save(ref.state_dict(), path)
    (tmp_path / "model.config.json").write_text(json.dumps({"num_heads": ref.encoder.layers[0].num_heads}))
    built = load_checkpoint(path)
    assert built.family == "torchvision"
    size = kw.get("image_size", 64)
    assert built.preprocessing.input_size == (size, size)
    assert built.preprocessing.patch_size == kw.get("patch_size", 16)
    assert len(built.labels) == kw.get("num_classes", 7) and built.labels[0] == "class 0"
    _same_outputs(ref, built.module, size)


def test_standard_width_gets_standard_heads_without_config(tmp_path):
    ref = _tv(hidden_dim=192, num_heads=3, mlp_dim=256)
    torch.save(ref.state_dict(), tmp_path / "tiny.pth")
    _same_outputs(ref, load_checkpoint(tmp_path / "tiny.pth").module, 64)


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module_prefix", "nested"])
def test_wrappers_and_prefixes(tmp_path, wrap):
    ref = _tv(hidden_dim=192, num_heads=3)
    sd = ref.state_dict()
    obj = {
        "model": {"model": sd, "epoch": 3},
        "state_dict": {"state_dict": sd, "optimizer": {"lr": 0.1}},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "nested": {"checkpoint_info": "x", "state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[wrap]
    torch.save(obj, tmp_path / "w.pt")
    _same_outputs(ref, load_checkpoint(tmp_path / "w.pt").module, 64)


def test_safetensors_checkpoint_and_labels_txt(tmp_path):
    ref = _tv(hidden_dim=192, num_heads=3, num_classes=3)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "net.safetensors"))
    (tmp_path / "net.labels.txt").write_text("cat\ndog\nbird\n\n")
    built = load_checkpoint(tmp_path / "net.safetensors")
    assert built.labels == ("cat", "dog", "bird")
    _same_outputs(ref, built.module, 64)


def test_labels_json_dict(tmp_path):
    ref = _tv(hidden_dim=192, num_heads=3, num_classes=3)
    torch.save(ref.state_dict(), tmp_path / "n.pth")
    (tmp_path / "n.labels.json").write_text(json.dumps({"0": "a", "2": "c", "1": "b"}))
    assert load_checkpoint(tmp_path / "n.pth").labels == ("a", "b", "c")


def test_labels_file_chosen_apart_from_the_checkpoint(tmp_path):
    ref = _tv(hidden_dim=192, num_heads=3, num_classes=3)
    torch.save(ref.state_dict(), tmp_path / "n.pth")
    (tmp_path / "n.labels.txt").write_text("x\ny\nz\n")  # the chosen file wins over the sidecar
    chosen = tmp_path / "elsewhere" / "names.txt"
    chosen.parent.mkdir()
    chosen.write_text("cat\ndog\nbird\n")
    assert load_checkpoint(tmp_path / "n.pth", labels=chosen).labels == ("cat", "dog", "bird")
    as_json = tmp_path / "names.json"
    as_json.write_text(json.dumps(["a", "b", "c"]))
    clf = load_classifier(tmp_path / "n.pth", device="cpu", labels=as_json)
    assert clf.labels == ("a", "b", "c")
    short = tmp_path / "short.txt"
    short.write_text("only\none\n")
    with pytest.raises(CheckpointError, match="2 labels but .* 3 classes"):
        load_checkpoint(tmp_path / "n.pth", labels=short)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "n.pth", labels=tmp_path / "missing.txt")


def test_labels_with_wrong_count_is_an_error(tmp_path):
    ref = _tv(hidden_dim=192, num_heads=3, num_classes=3)
    torch.save(ref.state_dict(), tmp_path / "n.pth")
    (tmp_path / "n.labels.txt").write_text("a\nb\n")
    with pytest.raises(CheckpointError, match="2 labels but .* 3 classes"):
        load_checkpoint(tmp_path / "n.pth")


class _ArticleViT(nn.Module):
    """The tutorial's minimal ViT, with the batch-first fix (state-dict layout unchanged)."""

    def __init__(self, img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=2, num_heads=4,
                 head_norm=False):  # fmt: skip
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, embed_dim) * 0.1)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, embed_dim * 4, activation="gelu",
                                           batch_first=True, dropout=0.0)  # fmt: skip
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.mlp_head = (nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
                         if head_norm else nn.Linear(embed_dim, num_classes))  # fmt: skip

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.mlp_head(self.transformer(x)[:, 0])


@pytest.mark.parametrize("head_norm", [False, True])
def test_article_style_minimal_vit(tmp_path, head_norm):
    torch.manual_seed(0)
    ref = _ArticleViT(head_norm=head_norm).eval()
    torch.save(ref.state_dict(), tmp_path / "cifar.pth")
    (tmp_path / "cifar.config.json").write_text(json.dumps({"num_heads": 4}))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (tmp_path / "cifar.labels.txt").write_text("\n".join(classes))
    built = load_checkpoint(tmp_path / "cifar.pth")
    assert built.family == "minivit" and built.labels == tuple(classes)
    assert built.preprocessing.patch_grid == (8, 8)
    _same_outputs(ref, built.module, 32)
    # …and the app can see its attention.
    clf = load_classifier(tmp_path / "cifar.pth", device="cpu")
    from PIL import Image

    res = clf.classify(Image.new("RGB", (50, 40), (200, 30, 30)))[0]
    assert res.attention.cls.shape == (2, 4, 65)


def test_demo_safetensors_round_trip_through_the_generic_loader(tmp_path):
    from vit_desktop.core.demo.model import CONFIG
    from vit_desktop.core.demo.train import save_weights
    from vit_desktop.core.minivit import MiniViT

    torch.manual_seed(0)
    ref = MiniViT(CONFIG).eval()
    save_weights(ref, tmp_path / "demo.safetensors", {"steps": 0})
    built = load_checkpoint(tmp_path / "demo.safetensors")
    assert built.labels[0] == "circle" and built.preprocessing.mode == "letterbox"
    _same_outputs(ref, built.module, CONFIG.image_size)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": evil}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # The same through torch.save's zip format.
    path2 = tmp_path / "evil2.pth"
    torch.save({"w": torch.zeros(1), "x": evil}, path2)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path2)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (os.urandom(4096), "refused|not a"),
])  # fmt: skip
def test_garbage_files(tmp_path, content, match):
    p = tmp_path / "bad.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(p)


def test_truncated_checkpoint(tmp_path):
    p = tmp_path / "t.pth"
    torch.save(_tv().state_dict(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable|not a PyTorch"):
        load_checkpoint(p)


def test_bad_safetensors_header(tmp_path):
    p = tmp_path / "b.safetensors"
    p.write_bytes((200).to_bytes(8, "little") + b"{not json" + b" " * 300)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(p)


def test_wrong_architecture_names_what_is_missing(tmp_path):
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 2)).state_dict(), tmp_path / "cnn.pth")
    with pytest.raises(CheckpointError, match="conv_proj.weight"):
        load_checkpoint(tmp_path / "cnn.pth")


def test_wrong_shapes_and_missing_keys(tmp_path):
    sd = _tv(hidden_dim=192, num_heads=3).state_dict()
    sd["encoder.layers.encoder_layer_1.mlp.0.weight"] = torch.zeros(5, 5)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "shape.pth")
    sd = _tv(hidden_dim=192, num_heads=3).state_dict()
    del sd["heads.head.weight"]
    torch.save(sd, tmp_path / "nohead.pth")
    with pytest.raises(CheckpointError, match="heads.head.weight"):
        load_checkpoint(tmp_path / "nohead.pth")


def test_non_square_position_table(tmp_path):
    sd = _tv(hidden_dim=192, num_heads=3).state_dict()
    sd["encoder.pos_embedding"] = torch.zeros(1, 20, 192)
    torch.save(sd, tmp_path / "p.pth")
    with pytest.raises(CheckpointError, match="square"):
        load_checkpoint(tmp_path / "p.pth")


@pytest.mark.parametrize("config,match", [
    ({"preprocessing": {"input_size": 128}}, "asks for 128×128"),
    ([1, 2, 3], "JSON object"),
    ({"num_heads": "x"}, "whole number"),
])  # fmt: skip
def test_bad_sidecar_config_is_a_checkpoint_error(tmp_path, config, match):
    torch.save(_tv(hidden_dim=192, num_heads=3).state_dict(), tmp_path / "c.pth")
    (tmp_path / "c.config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "c.pth")


def test_no_encoder_layers(tmp_path):
    sd = {k: v for k, v in _tv(hidden_dim=192, num_heads=3).state_dict().items() if "encoder_layer" not in k}
    torch.save(sd, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="encoder"):
        load_checkpoint(tmp_path / "empty.pth")


# -- the one safe torch.load, for checkpoints and cached downloads alike -------------------------


def test_safe_torch_load_says_why_it_refused(tmp_path):
    from vit_desktop.core.checkpoints import SafeLoadError, safe_torch_load

    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    torch.save({"w": torch.ones(2), "x": evil}, tmp_path / "evil.pth")
    with pytest.raises(SafeLoadError, match=r"^evil\.pth: refused by the safe loader") as err:
        safe_torch_load(tmp_path / "evil.pth")
    assert err.value.kind == "refused" and not marker.exists()
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(SafeLoadError, match="not a readable PyTorch checkpoint") as err:
        safe_torch_load(tmp_path / "cut.pth", "the cut file")
    assert err.value.kind == "damaged" and str(err.value).startswith("the cut file: ")
    assert torch.equal(safe_torch_load(tmp_path / "ok.pth")["w"], torch.ones(2))


@pytest.mark.parametrize("content", ["code", "truncated"])
def test_cached_weights_that_will_not_load_safely_are_removed(tmp_path, content):
    from vit_desktop.core import catalog, loading
    from vit_desktop.core.errors import CorruptCacheError

    entry = catalog.get("demo-shapes")
    path = tmp_path / "cached.pth"
    marker = tmp_path / "pwned"
    if content == "code":
        evil = _Evil()
        evil.marker = marker
        torch.save({"state_dict": evil}, path)
    else:
        torch.save(_tv().state_dict(), path)
        path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(CorruptCacheError, match="have been removed; download them again"):
        loading.cached_state(entry, path)
    assert not path.exists() and not marker.exists()


def test_cached_weights_that_load_give_their_tensors(tmp_path):
    from vit_desktop.core import catalog, loading

    sd = _tv().state_dict()
    torch.save(sd, tmp_path / "cached.pth")
    state = loading.cached_state(catalog.get("demo-shapes"), tmp_path / "cached.pth")
    assert state.keys() == sd.keys() and all(torch.equal(state[k], sd[k]) for k in sd)
    assert (tmp_path / "cached.pth").exists()


# -- reading the files beside a checkpoint safely ------------------------------------------------


def test_json_depth_counts_brackets_outside_strings_only():
    from vit_desktop.core.safe_files import json_depth, loads_json

    assert json_depth('["[[[[", "]]", {"a": [1, "\\"[[["]}]') == 3
    assert json_depth("") == 0 and json_depth('"just [a] string"') == 0
    assert loads_json('{"x": [[1]]}', 3) == {"x": [[1]]}
    with pytest.raises(ValueError, match="nested 4 levels deep"):
        loads_json('{"x": [[[1]]]}', 3)
    with pytest.raises(ValueError, match="nested 200,000 levels deep"):
        loads_json("[" * 200_000 + "]" * 200_000)


def test_read_small_text_caps_the_size_and_refuses_what_is_not_a_regular_file(tmp_path):
    from vit_desktop.core.safe_files import read_small_text

    p = tmp_path / "names.txt"
    p.write_bytes(b"\xef\xbb\xbfcat\ndog\n")
    assert read_small_text(p, 11, "labels file") == "cat\ndog\n"  # 11 bytes with the BOM: at the cap
    p.write_bytes(b"x" * 12)
    with pytest.raises(CheckpointError, match=r"^labels file names\.txt is too large \(over 11 bytes\)"):
        read_small_text(p, 11, "labels file")
    with pytest.raises(CheckpointError, match="config file nothing.json does not exist"):
        read_small_text(tmp_path / "nothing.json", 100, "config file")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.txt")
        with pytest.raises(CheckpointError, match="pipe.txt is a pipe, not a regular file"):
            read_small_text(tmp_path / "pipe.txt", 100, "labels file")


def test_a_dangling_labels_link_beside_a_checkpoint_is_an_error_not_ignored(tmp_path):
    torch.save(_tv(num_classes=3).state_dict(), tmp_path / "n.pth")
    (tmp_path / "n.labels.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(CheckpointError, match="n.labels.txt does not exist"):
        load_checkpoint(tmp_path / "n.pth")


def test_labels_in_safetensors_metadata_are_validated_too(tmp_path):
    sd = {k: v.contiguous() for k, v in _tv(num_classes=3).state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={"labels": json.dumps(["a", "b", "c"])})
    assert load_checkpoint(tmp_path / "m.safetensors").labels == ("a", "b", "c")
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={"labels": "[" * 50_000 + "]" * 50_000})
    with pytest.raises(CheckpointError, match="the file's metadata could not be read: .*nested 50,000"):
        load_checkpoint(tmp_path / "m.safetensors")
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={"labels": json.dumps(["a", {"b": 1}, "c"])})
    with pytest.raises(CheckpointError, match="the file's metadata: label 1 is dict"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_running_out_of_memory_building_a_catalog_model_is_a_weights_error(monkeypatch):
    from vit_desktop.core import families, loading
    from vit_desktop.core.errors import WeightsError

    def fail(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    monkeypatch.setattr(families.minivit, "MiniViT", fail)
    with pytest.raises(WeightsError, match="not enough memory to build"):
        loading.load_model("demo-shapes")
