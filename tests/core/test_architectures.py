"""The model-family registry: recognising, building and looking inside each family, for
checkpoint files and catalog entries alike, and a new family plugging in by registering."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from vit_desktop.core import architectures, catalog, families, loading
from vit_desktop.core.architectures import Built, Family
from vit_desktop.core.capture import attention_modules, multihead_attention_modules
from vit_desktop.core.checkpoints import load_checkpoint, read_state_dict, strip_prefixes
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.errors import CheckpointError, WeightsError
from vit_desktop.core.minivit import MiniViT, MiniViTConfig
from vit_desktop.core.preprocess import Preprocessing


def _tv() -> VisionTransformer:
    torch.manual_seed(0)
    m = VisionTransformer(image_size=48, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32,
                          mlp_dim=64, num_classes=5)  # fmt: skip
    nn.init.normal_(m.heads.head.weight, std=0.3)  # torchvision's zero head would hide any mismatch
    return m.eval()


def _mini() -> MiniViT:
    torch.manual_seed(1)
    cfg = MiniViTConfig(image_size=32, patch_size=8, num_classes=4, embed_dim=32, depth=2, num_heads=4,
                        mlp_dim=48, norm_first=True, stem_channels=(8,), stem_strides=(2,),
                        input_norm=True)  # fmt: skip
    m = MiniViT(cfg)
    nn.init.normal_(m.mlp_head.weight, std=0.3)
    return m.eval()


def _logits(module: nn.Module, size: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return module.eval()(x)


def _same_logits(a: nn.Module, b: nn.Module, size: int) -> None:
    ya, yb = _logits(a, size), _logits(b, size)
    assert ya.abs().max() > 0.05  # a comparison of zeros would prove nothing
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)


def test_the_built_in_families_are_registered_in_order():
    names = [f.name for f in architectures.families()]
    assert names[:2] == ["torchvision", "minivit"]
    assert architectures.get_family("minivit") is families.minivit.FAMILY
    with pytest.raises(KeyError, match="torchvision, minivit"):
        architectures.get_family("no-such-family")
    with pytest.raises(ValueError, match="already registered"):
        architectures.register(families.torchvision_vit.FAMILY)


def test_torchvision_file_is_recognised_and_rebuilt(tmp_path):
    ref = _tv()
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "tv.pth")
    state, _ = read_state_dict(tmp_path / "tv.pth")
    state = strip_prefixes(state)
    family = architectures.family_for_state(state)
    assert family is not None and family.name == "torchvision"
    built = family.build(state, {"num_heads": 2}, "tv.pth")
    assert built.input_size == (48, 48) and built.patch_size == 16
    assert family.num_classes(built.module) == 5
    assert architectures.family_for_module(built.module) is family
    _same_logits(ref, built.module, 48)


def test_minivit_state_is_recognised_and_rebuilt():
    ref = _mini()
    state = ref.state_dict()
    family = architectures.family_for_state(state)
    assert family is not None and family.name == "minivit"
    built = family.build(state, ref.config.to_dict(), "mini")
    assert built.input_size == (32, 32) and built.patch_size == 8
    assert built.module.config == ref.config and family.num_classes(built.module) == 4
    _same_logits(ref, built.module, 32)


def test_a_timm_layout_is_not_taken_for_a_minimal_vit():
    # timm also names its patch projection patch_embed.proj; without the tutorial's encoder
    # and head names it is not the minimal ViT: the timm family claims it.
    state = {"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "cls_token": torch.zeros(1, 1, 8),
             "pos_embed": torch.zeros(1, 5, 8), "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}  # fmt: skip
    assert architectures.family_for_state(state).name == "timm"


def test_an_unknown_file_lists_what_every_registered_family_expects(tmp_path, toy_family):
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 2)).state_dict(), tmp_path / "cnn.pth")
    with pytest.raises(CheckpointError, match="not a Vision Transformer this app knows") as err:
        load_checkpoint(tmp_path / "cnn.pth")
    message = err.value.one_line()
    for family in architectures.families():
        assert f"{family.expects} ({family.title})" in message
    assert "toy_embed.weight (toy ViT)" in message  # registered by the test: from the registry
    assert "found 0.bias, 0.weight, 1.bias, 1.weight" in message


# -- a new family plugs in by registering ------------------------------------------------------


class ToyViT(nn.Module):
    """One attention block over patch tokens and a class token; ``decoy`` is an attention
    layer the forward pass never runs, so only the family's own finder names the right one."""

    def __init__(self, width: int = 16, patch: int = 8, classes: int = 3, heads: int = 2) -> None:
        super().__init__()
        self.toy_embed = nn.Conv2d(3, width, patch, patch)
        self.toy_cls = nn.Parameter(torch.randn(1, 1, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.decoy = nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.toy_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.toy_cls.expand(len(t), -1, -1), t], dim=1)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t[:, 0])


def _build_toy(state, config, name) -> Built:
    width, patch = int(state["toy_embed.weight"].shape[0]), int(state["toy_embed.weight"].shape[-1])
    model = ToyViT(
        width, patch, int(state["head.weight"].shape[0]), architectures.heads_for(width, config, name)
    )
    architectures.load_exactly(model, state, name)
    size = int(config["image_size"])
    return Built(model, (size, size), patch)


@pytest.fixture
def toy_family():
    family = architectures.register(
        Family(
            name="toy",
            title="toy ViT",
            expects="toy_embed.weight",
            recognise=lambda state: "toy_embed.weight" in state,
            build=_build_toy,
            num_classes=lambda m: m.head.out_features,
            owns_module=lambda m: isinstance(m, ToyViT),
            attention_modules=lambda m: [m.attn],
            default_preprocessing=lambda size, patch: Preprocessing(
                size, patch, (0.5,) * 3, (0.25,) * 3, mode="letterbox"
            ),  # fmt: skip
            default_labels=lambda n: tuple(f"toy {i}" for i in range(n)),
        )
    )
    yield family
    architectures.unregister("toy")


def test_a_registered_family_is_used_by_load_checkpoint_and_the_classifier(tmp_path, toy_family):
    torch.manual_seed(3)
    ref = ToyViT().eval()
    torch.save(ref.state_dict(), tmp_path / "toy.pth")
    (tmp_path / "toy.config.json").write_text(json.dumps({"image_size": 32, "num_heads": 2}))
    built = load_checkpoint(tmp_path / "toy.pth")
    assert built.family == "toy"
    assert built.labels == ("toy 0", "toy 1", "toy 2")  # the family's default labels
    assert built.preprocessing.mode == "letterbox" and built.preprocessing.patch_grid == (4, 4)
    _same_logits(ref, built.module, 32)

    # Attention is captured where the family says: the decoy is never run, so every
    # nn.MultiheadAttention would be the wrong answer.
    assert attention_modules(built.module) == [built.module.attn]
    assert len(multihead_attention_modules(built.module)) == 2
    clf = load_classifier(tmp_path / "toy.pth", device="cpu")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    (res,) = clf.classify(img, attention="full")
    assert res.attention.cls.shape == (1, 2, 17) and res.top1.label.startswith("toy ")
    np.testing.assert_allclose(res.attention.cls.sum(axis=-1), 1.0, atol=1e-5)


def test_unregistered_the_family_is_gone(tmp_path, toy_family):
    torch.save(ToyViT().state_dict(), tmp_path / "toy.pth")
    (tmp_path / "toy.config.json").write_text(json.dumps({"image_size": 32}))
    assert load_checkpoint(tmp_path / "toy.pth").family == "toy"
    architectures.unregister("toy")
    with pytest.raises(CheckpointError, match="not a Vision Transformer this app knows"):
        load_checkpoint(tmp_path / "toy.pth")


def test_a_higher_priority_family_is_asked_first(toy_family):
    special = architectures.register(
        Family(
            name="tv-special",
            title="special torchvision",
            expects="conv_proj.weight, class_token and special_token",
            recognise=lambda s: "special_token" in s and "conv_proj.weight" in s,
            build=_build_toy,
            num_classes=lambda m: 0,
            owns_module=lambda m: False,
            priority=1,
        )
    )
    try:
        plain = _tv().state_dict()
        assert architectures.family_for_state(plain).name == "torchvision"
        assert architectures.family_for_state({**plain, "special_token": torch.zeros(1)}) is special
        assert architectures.families()[0] is special
    finally:
        architectures.unregister("tv-special")


# -- catalog entries are built by their family ---------------------------------------------------


def test_every_catalog_entry_has_a_family_that_builds_it():
    for entry in catalog.entries():
        family = architectures.family_for_entry(entry)
        assert family.name == entry.architecture.split(":")[0] and family.build_entry is not None


def test_an_entry_of_no_registered_family_is_refused_with_the_families_named():
    entry = catalog.ModelEntry(id="x", display_name="Mystery", group="Test", architecture="nosuch:net",
                               params=1, preprocessing=catalog.get("demo-shapes").preprocessing,
                               labels=("a",))  # fmt: skip
    with pytest.raises(WeightsError, match=r"Mystery: .*'nosuch:net'.*torchvision, minivit"):
        loading.load_model(entry, pretrained=False)


def test_the_demo_entry_and_its_file_as_a_checkpoint_give_the_same_model():
    from importlib import resources

    entry = catalog.get("demo-shapes")
    from_catalog = loading.load_model(entry)
    with resources.as_file(resources.files("vit_desktop.resources").joinpath(entry.filename)) as path:
        from_file = load_checkpoint(path)
    assert from_file.family == "minivit" and from_file.labels == from_catalog.labels
    assert from_file.preprocessing == from_catalog.preprocessing
    _same_logits(from_file.module, from_catalog.module, entry.input_size[0])
    random = loading.load_model(entry, pretrained=False).module
    assert not torch.allclose(_logits(random, 128), _logits(from_catalog.module, 128))


def test_random_torchvision_entry_is_built_by_its_family_with_a_live_head():
    entry = catalog.get("vit-b-32")
    module = loading.load_model(entry, pretrained=False).module
    assert architectures.family_for_module(module).name == "torchvision"
    assert module.heads.head.weight.abs().max() > 0  # torchvision's zero head re-initialised
    ref = architectures.get_family("torchvision").build_entry(entry, module.state_dict())
    _same_logits(module, ref, entry.input_size[0])
    bad = {k: v for k, v in module.state_dict().items() if k != "heads.head.bias"}
    with pytest.raises(WeightsError, match="do not fit"):
        architectures.get_family("torchvision").build_entry(entry, bad)
