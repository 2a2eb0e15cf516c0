"""timm checkpoints (state dicts in files and wrappers, hub folders) and the DeiT catalog entries
open with timm's own logits, attention and preprocessing; malformed ones are refused in one line
naming the tensor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from timm.models._hub import save_for_hf
from torch import nn

from tests.helpers import assert_one_clear_line
from vit_desktop.core import catalog
from vit_desktop.core.architectures import family_for_entry, family_for_module
from vit_desktop.core.checkpoints import load_checkpoint
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.errors import CheckpointError, WeightsError
from vit_desktop.core.families import timm_folder, timm_vit
from vit_desktop.core.preprocess import prepare
from vit_desktop.core.tokenvit import TokenViT

SIZE, PATCH, CLASSES = 32, 8, 5


def _reinit(model: nn.Module, seed: int) -> nn.Module:
    """Random weights with some character (peaked attention, non-trivial norms and layer
    scales, non-zero prefix tokens), the heads scaled so that the logits reach about ±10."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        model.eval()
        h, w = model.patch_embed.img_size
        scale = 10 / model(torch.randn(4, 3, h, w, generator=g)).abs().max()
        for head in (model.head, getattr(model, "head_dist", None)):
            if head is not None:
                head.weight.mul_(scale)
                head.bias.mul_(scale)
    return model


def _timm(arch: str = "vit_tiny_patch16_224", seed: int = 0, **kw) -> nn.Module:
    args = dict(pretrained=False, num_classes=CLASSES, img_size=SIZE, patch_size=PATCH, depth=2)
    args.update(kw)
    return _reinit(timm.create_model(arch, **args), seed)


def _save(state: dict, tmp_path, fmt: str, config: dict | None = None):
    """``state`` as ``net.pth`` (plain, or in a ``model``/``state_dict_ema`` wrapper) or
    ``net.safetensors``, with a ``net.config.json`` when ``config`` is given."""
    ext = "safetensors" if fmt == "safetensors" else "pth"
    path = tmp_path / f"net.{ext}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state if fmt == "pth" else {fmt: state, "epoch": 3}, path)
    side = tmp_path / "net.config.json"
    side.unlink(missing_ok=True)
    if config is not None:
        side.write_text(json.dumps(config))
    return path


def _timm_attention(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's logits and its last block's attention probabilities (B, H, N, N), from timm's
    own softmax (the unfused path, whose probabilities go through ``attn_drop``)."""
    seen = []
    for blk in model.blocks:
        blk.attn.fused_attn = False
    hook = model.blocks[-1].attn.attn_drop.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    with torch.inference_mode():
        logits = model(x)
    hook.remove()
    return logits, seen[0]


def _compare(model: nn.Module, path, label: str) -> TokenViT:
    """Open ``path`` in the app and check its logits and last-layer attention row against timm's
    on the same input; returns the app's module."""
    clf = load_classifier(path, device="cpu")
    h, w = clf.preprocessing.input_size
    x = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1))
    want, probs = _timm_attention(model, x)
    logits, (rows, _, _) = clf.forward(x)
    layout = clf.module.layout
    lib_row = probs[:, :, 0] if layout.query == "cls" else probs[:, :, layout.num_prefix_tokens :].mean(dim=2)
    assert want.abs().max() > 5  # the comparison is not of near-zero outputs
    d_logit = float((logits - want).abs().max())
    d_att = float((torch.as_tensor(rows)[:, -1] - lib_row).abs().max())
    print(f"{label}: max |Δlogit| {d_logit:.2e} (logits up to {float(want.abs().max()):.1f}), "
          f"max |Δattention| {d_att:.2e}")  # fmt: skip
    assert d_logit <= 1e-4
    assert torch.equal(logits.argmax(-1), want.argmax(-1))
    assert d_att <= 1e-5
    return clf.module


# -- state dicts ---------------------------------------------------------------------------------

#: timm settings, and the file form each is saved in (plain CLS's other forms: below).
CONFIGS = {
    "plain CLS": (dict(), "model"),
    "registers": (dict(reg_tokens=4), "safetensors"),
    "registers, no_embed_class": (dict(reg_tokens=4, no_embed_class=True), "pth"),
    "qk_norm, layer scale": (dict(qk_norm=True, init_values=1e-5), "state_dict_ema"),
    "avg pool, fc_norm, no CLS": (dict(global_pool="avg", fc_norm=True, class_token=False), "safetensors"),
    "no qkv bias": (dict(qkv_bias=False), "pth"),
    "norm_pre, no patch bias": (dict(pre_norm=True), "model"),
}


@pytest.mark.parametrize("label", list(CONFIGS))
def test_timm_state_dicts_give_timm_logits_and_attention(label, tmp_path):
    kw, fmt = CONFIGS[label]
    model = _timm(seed=len(label), **kw)
    state = model.state_dict()
    module = _compare(model, _save(state, tmp_path, fmt), f"{label} ({fmt})")
    assert family_for_module(module).name == "timm"
    assert module.layout.num_prefix_tokens == model.num_prefix_tokens
    # What the builder checks a file against is the network's own list of tensors, and timm's.
    assert timm_vit.expected_shapes(module.cfg) == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert timm_vit.expected_shapes(module.cfg) == {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("fmt", ["pth", "state_dict_ema", "safetensors"])
def test_every_file_form_opens(fmt, tmp_path):
    model = _timm(seed=5)
    _compare(model, _save(model.state_dict(), tmp_path, fmt), f"plain CLS ({fmt})")


def test_distilled_deit_averages_its_two_heads_as_timm_evaluates(tmp_path):
    model = _timm("deit_tiny_distilled_patch16_224", seed=3)
    path = _save({"model": model.state_dict()}, tmp_path, "pth")
    module = _compare(model, path, "DeiT distilled")
    assert module.layout.prefix == ("CLS", "distillation")
    clf = load_classifier(path, device="cpu")
    result = clf.classify([Image.new("RGB", (50, 40), (90, 160, 30))])[0]
    assert result.attention.layout.prefix == ("CLS", "distillation")
    assert result.attention.cls.shape[-1] == 2 + (SIZE // PATCH) ** 2


def test_a_width_without_a_standard_head_count_takes_num_heads_from_the_sidecar(tmp_path):
    model = _timm(embed_dim=128, num_heads=8, seed=4)
    _compare(model, _save(model.state_dict(), tmp_path, "pth", {"num_heads": 8}), "width 128, 8 heads")
    guessed = load_classifier(_save(model.state_dict(), tmp_path, "pth"), device="cpu")  # 128 / 64 = 2 heads
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert float((guessed.module(x) - model(x)).abs().max()) > 1e-2  # the sidecar was needed


def test_a_non_square_grid_takes_img_size_from_the_sidecar(tmp_path):
    model = _timm(img_size=(32, 48), seed=6)
    module = _compare(
        model, _save(model.state_dict(), tmp_path, "safetensors", {"img_size": [32, 48]}), "32×48 px"
    )
    assert module.cfg.grid == (4, 6)


# -- hub folders ----------------------------------------------------------------------------------


def _photo(size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(7)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) % 256], axis=-1) * 0.7 + rng.uniform(
        0, 70, (h, w, 3)
    )
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _folder(tmp_path, labels, descriptions=None, safe=True, **overlay):
    model = _timm(reg_tokens=2, seed=9, pretrained_cfg_overlay=overlay)
    folder = tmp_path / "timm-model"
    extra = {"label_descriptions": descriptions} if descriptions else {}
    save_for_hf(model, str(folder), model_config={"label_names": labels, **extra}, safe_serialization=safe)
    return folder, timm.create_model(f"local-dir:{folder}", pretrained=True).eval()


def _same_preprocessing(built, ref: nn.Module) -> float:
    transform = create_transform(**resolve_data_config({}, model=ref))
    img = _photo()
    ours, _ = prepare(img, built.preprocessing)
    return float(np.abs(ours - transform(img).numpy()).max())


def test_a_timm_folder_opens_with_its_labels_preprocessing_and_logits(tmp_path):
    names = ["cat", "dog", "fox", "owl", "eel"]
    folder, ref = _folder(tmp_path, names, crop_pct=0.95, interpolation="bicubic")
    for path in (folder, folder / "model.safetensors"):
        built = load_checkpoint(path)
        assert built.family == "timm" and built.labels == tuple(names)
        pre = built.preprocessing
        assert (pre.mode, pre.interpolation, pre.resize_size) == (
            "resize_crop",
            "bicubic",
            math.floor(SIZE / 0.95),
        )
        d = _same_preprocessing(built, ref)
        print(f"timm folder ({path.name}): max |Δpreprocessed| {d:.2e}")
        assert d <= 1e-6
    _compare(ref, folder, "timm folder")


def test_a_squashing_folder_with_pytorch_model_bin_and_label_descriptions(tmp_path):
    ids = [f"n0{i}" for i in range(CLASSES)]
    described = {k: f"kind {k[-1]}, a thing" for k in ids}
    folder, ref = _folder(tmp_path, ids, described, safe=False, crop_mode="squash", crop_pct=0.9,
                          interpolation="bilinear", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))  # fmt: skip
    built = load_checkpoint(folder / "pytorch_model.bin")
    assert built.preprocessing.mode == "squash"
    assert built.labels == tuple(described[k] for k in ids)
    assert _same_preprocessing(built, ref) <= 1e-6
    assert timm_folder.label_names({"label_names": ids[:4]}, CLASSES) is None  # a wrong count: numbered


def test_a_folder_whose_crop_cannot_be_reproduced_is_refused_in_one_line(tmp_path):
    folder, _ = _folder(tmp_path, None)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pretrained_cfg"]["crop_mode"] = "border"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="crop_mode 'border'") as err:
        load_checkpoint(folder)
    assert_one_clear_line(str(err.value), str(folder))


# -- almost-known files -----------------------------------------------------------------------------


def _refusal(state: dict, tmp_path, fmt: str = "pth") -> str:
    path = _save(state, tmp_path, fmt)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert_one_clear_line(str(err.value), str(path))
    return str(err.value)


def test_a_missing_tensor_is_named(tmp_path):
    state = _timm().state_dict()
    del state["blocks.1.mlp.fc2.weight"]
    assert "blocks.1.mlp.fc2.weight" in _refusal(state, tmp_path)


@pytest.mark.parametrize("shape", [(1, 17, 100), (1, 20, 192), (17, 192)])
def test_a_wrong_pos_embed_is_named(shape, tmp_path):
    state = _timm().state_dict()
    state["pos_embed"] = torch.zeros(shape)
    assert "pos_embed" in _refusal(state, tmp_path, "safetensors")


@pytest.mark.parametrize(("arch", "kw", "tensor"), [
    ("vit_tiny_patch16_224", dict(global_pool="map"), "attn_pool."),
    ("vit_tiny_patch16_224", dict(num_classes=0), "has no classification head (head.weight)"),
    ("vit_tiny_patch16_224", dict(patch_size=(8, 4)), "patch_embed.proj.weight"),
    ("eva02_tiny_patch14_224", dict(patch_size=8), "blocks.0.mlp.fc1.weight"),  # a packed SwiGLU
    ("beit_base_patch16_224", dict(embed_dim=64, num_heads=2), "relative_position_bias_table"),
])  # fmt: skip
def test_what_the_app_cannot_compute_is_refused_naming_it(arch, kw, tensor, tmp_path):
    args = dict(pretrained=False, num_classes=CLASSES, img_size=SIZE, patch_size=PATCH, depth=2)
    state = timm.create_model(arch, **{**args, **kw}).state_dict()
    assert tensor in _refusal(state, tmp_path)


def test_a_quick_gelu_folder_is_refused(tmp_path):
    model = timm.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=False, num_classes=CLASSES,
                              img_size=SIZE, patch_size=PATCH, depth=1, embed_dim=64, num_heads=2)  # fmt: skip
    save_for_hf(model, str(tmp_path / "clip"), safe_serialization=True)
    with pytest.raises(CheckpointError, match="act_layer 'quick_gelu'") as err:
        load_checkpoint(tmp_path / "clip")
    assert_one_clear_line(str(err.value), "clip")


def test_a_swiglu_mlp_is_refused_naming_it(tmp_path):
    state = _timm().state_dict()
    state["blocks.0.mlp.fc1_g.weight"] = state.pop("blocks.0.mlp.fc1.weight")
    assert "blocks.0.mlp.fc1_g.weight" in _refusal(state, tmp_path)


# -- the DeiT catalog entries ------------------------------------------------------------------------


def test_a_deit_state_dict_counts_its_distillation_token_before_the_grid(tmp_path):
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1).eval()
    assert model.pos_embed.shape[1] == 198  # 196 patches, CLS and distillation
    built = load_checkpoint(_save({"model": model.state_dict()}, tmp_path, "pth"))
    assert built.preprocessing.input_size == (224, 224) and built.module.layout.prefix == (
        "CLS",
        "distillation",
    )


def test_a_deit_entry_loads_timms_weights_strictly(tmp_path):
    from vit_desktop.core.loading import cached_state

    entry = catalog.get("deit_tiny_distilled_patch16_224")
    family = family_for_entry(entry)
    ref = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).eval()
    with torch.no_grad():
        for head in (ref.head, ref.head_dist):
            head.weight.mul_(20)
    torch.save({"model": ref.state_dict()}, tmp_path / entry.filename)
    module = family.build_entry(entry, cached_state(entry, tmp_path / entry.filename)).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = ref(x)
        d = float((module(x) - want).abs().max())
    print(
        f"DeiT-Ti distilled catalog entry: max |Δlogit| {d:.2e} (logits up to {float(want.abs().max()):.1f})"
    )
    assert want.abs().max() > 1 and d <= 1e-4
    state = ref.state_dict()
    state.pop("head_dist.bias")
    with pytest.raises(WeightsError, match="head_dist.bias"):
        family.build_entry(entry, state)


@pytest.mark.parametrize("builder", ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_a_deit_entry_builds_with_random_weights(builder):
    entry = catalog.get(builder)
    with torch.inference_mode():
        out = family_for_entry(entry).build_entry(entry, None).eval()(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and bool(torch.isfinite(out).all()) and float(out.std()) > 0


def test_deit_entries_are_listed_with_deits_evaluation():
    deit = [e for e in catalog.entries() if e.group == "DeiT"]
    builders = ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_tiny_distilled_patch16_224",
                "deit_small_distilled_patch16_224"]  # fmt: skip
    assert [e.architecture for e in deit] == [f"timm:{b}" for b in builders]
    imagenet = catalog.get("vit-b-16").labels
    for e, builder in zip(deit, builders, strict=True):
        pre = e.preprocessing
        assert (pre.resize_size, pre.input_size, pre.interpolation) == (256, (224, 224), "bicubic")
        assert e.labels == imagenet and e.license == "Apache-2.0" and catalog.get(builder) is e
        cfg = timm.get_pretrained_cfg(builder)
        assert e.url == cfg.url and e.filename == cfg.url.rsplit("/", 1)[1]
        assert e.filename.endswith(f"-{e.sha256}.pth") and len(e.sha256) == 8
        shapes = timm_vit.expected_shapes(timm_vit.entry_config(e))
        assert e.params == sum(math.prod(s) for s in shapes.values())
        assert "full SHA-256 is recorded on first download" in e.to_dict()["note"]
