"""vit-pytorch checkpoints (ViT, its 0.x layout, SimpleViT) open with the library's own logits
and attention, and malformed ones are refused in one line naming the tensor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from einops import rearrange, repeat
from einops.layers.torch import Rearrange
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from vit_pytorch import SimpleViT, ViT

from vit_desktop.core.architectures import imagenet_preprocessing
from vit_desktop.core.checkpoints import load_checkpoint
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.errors import CheckpointError

# -- vit-pytorch 0.x's ViT, rebuilt for the test (the installed package has the current layout) --


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    def __init__(self, dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim, heads=8, dim_head=64, dropout=0.0):
        super().__init__()
        inner_dim = dim_head * heads
        project_out = not (heads == 1 and dim_head == dim)
        self.heads = heads
        self.scale = dim_head**-0.5
        self.attend = nn.Softmax(dim=-1)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = (
            nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout)) if project_out else nn.Identity()
        )

    def forward(self, x):
        qkv = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in qkv)
        attn = self.attend(torch.matmul(q, k.transpose(-1, -2)) * self.scale)
        out = rearrange(torch.matmul(attn, v), "b h n d -> b n (h d)")
        return self.to_out(out)


class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList([])
        for _ in range(depth):
            self.layers.append(nn.ModuleList([
                PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head, dropout=dropout)),
                PreNorm(dim, FeedForward(dim, mlp_dim, dropout=dropout)),
            ]))  # fmt: skip

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class OldViT(nn.Module):
    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, pool="cls",
                 channels=3, dim_head=64, dropout=0.0, emb_dropout=0.0):  # fmt: skip
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        patch_dim = channels * patch_size**2
        self.to_patch_embedding = nn.Sequential(
            Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size),
            nn.Linear(patch_dim, dim),
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)
        self.pool = pool
        self.to_latent = nn.Identity()
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img):
        x = self.to_patch_embedding(img)
        b, n, _ = x.shape
        cls_tokens = repeat(self.cls_token, "() n d -> b n d", b=b)
        x = torch.cat((cls_tokens, x), dim=1)
        x += self.pos_embedding[:, : (n + 1)]
        x = self.dropout(x)
        x = self.transformer(x)
        x = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
        return self.mlp_head(self.to_latent(x))


# -- helpers -------------------------------------------------------------------------------------


def _reinit(model: nn.Module, size: int, seed: int) -> nn.Module:
    """Random weights with some character (peaked attention, non-trivial norms), the head scaled
    so that the logits reach about ±10."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 1.5 / mod.in_features**0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
        model.eval()
        head = getattr(model, "linear_head", None) or model.mlp_head
        head = head[-1] if isinstance(head, nn.Sequential) else head
        scale = 10 / model(torch.randn(4, 3, size, size, generator=g)).abs().max()
        head.weight.mul_(scale)
        head.bias.mul_(scale)
    return model


def _save(state: dict, tmp_path, fmt: str, config: dict | None = None):
    path = tmp_path / f"net.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    side = tmp_path / "net.config.json"
    side.unlink(missing_ok=True)
    if config is not None:
        side.write_text(json.dumps(config))
    return path


def _image(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size * 2, dtype=np.float32)
    arr = (ramp[None, :, None] * 0.6 + rng.uniform(0, 100, (size * 2 - 10, size * 2, 3))).clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def _compare(ref: nn.Module, path, size: int, attend: nn.Module, query: str, prefix: int):
    """Open ``path`` in the app, run it and ``ref`` on the same preprocessed images, check the
    logits and the last layer's captured attention row against the library's, and return the
    app's module."""
    built = load_checkpoint(path)
    assert built.family == "vit-pytorch"
    assert built.preprocessing.input_size == (size, size)
    clf = load_classifier(path, device="cpu")
    assert clf.module.layout.query == query
    batch = torch.from_numpy(np.stack([clf.prepare(_image(size, s)).array for s in (1, 2)]))
    seen = []
    hook = attend.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.inference_mode():
        want = ref(batch)
    hook.remove()
    logits, (rows, _, _) = clf.forward(batch)
    assert want.abs().max() > 3  # the comparison is not of near-zero outputs
    probs = seen[0]  # (B, H, N, N): the library's own softmax
    lib_row = probs[:, :, 0] if query == "cls" else probs[:, :, prefix:].mean(dim=2)
    d_logit = float((logits - want).abs().max())
    d_att = float((torch.as_tensor(rows)[:, -1] - lib_row).abs().max())
    print(f"max |Δlogit| {d_logit:.2e}, max |Δattention| {d_att:.2e}")
    assert d_logit <= 1e-4
    assert torch.equal(logits.argmax(-1), want.argmax(-1))
    assert d_att <= 1e-5
    return built.module


def _vit(**kw) -> ViT:
    args = dict(image_size=32, patch_size=8, num_classes=7, dim=64, depth=2, heads=4, mlp_dim=96, dim_head=16)
    args.update(kw)
    torch.manual_seed(0)
    return _reinit(ViT(**args), args["image_size"], seed=args["depth"] + args["dim"])


# -- the current ViT -------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "fmt", "config"), [
    (dict(pool="cls", heads=3, dim_head=32), "pth", {"num_heads": 3}),  # attention 96 wide, width 64
    (dict(pool="mean", image_size=48, dim=96, depth=3, heads=2, dim_head=32), "safetensors", {"dim_head": 32}),
    (dict(pool="cls", heads=1, dim_head=64, depth=3), "pth", None),  # one full-width head: no to_out
])  # fmt: skip
def test_vit_same_logits_and_attention(tmp_path, kw, fmt, config):
    ref = _vit(**kw)
    path = _save(ref.state_dict(), tmp_path, fmt, config)
    cls = kw["pool"] == "cls"
    size = kw.get("image_size", 32)
    module = _compare(ref, path, size, ref.transformer.layers[-1][0].attend, "cls" if cls else "mean", 0)
    assert module.cfg.cls_token == cls and module.cfg.proj == (kw["heads"] != 1)


def test_vit_with_3d_tokens_and_mean_pool_averages_every_token(tmp_path):
    """vit-pytorch 1.x before the 2-D tokens: a (1, 1, dim) CLS token that mean pooling averages too."""
    ref = _vit(pool="cls", heads=2, dim_head=32)
    state = dict(ref.state_dict())
    state["cls_token"] = state["cls_token"][None]
    state["pos_embedding"] = state["pos_embedding"][None]
    ref.pool = "mean"  # the same forward as that version's: x.mean(dim=1) over every token
    path = _save(state, tmp_path, "pth", {"num_heads": 2, "pool": "mean"})
    _compare(ref, path, 32, ref.transformer.layers[-1][0].attend, "mean", 1)


def test_default_and_sidecar_preprocessing(tmp_path):
    ref = _vit(heads=1, dim_head=64)
    path = _save(ref.state_dict(), tmp_path, "pth")
    assert load_checkpoint(path).preprocessing == imagenet_preprocessing((32, 32), 8)
    (tmp_path / "net.config.json").write_text(
        json.dumps({"preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3}})
    )
    pre = load_checkpoint(path).preprocessing
    assert pre.mean == (0.5, 0.5, 0.5) and pre.input_size == (32, 32)


# -- the 0.x ViT -------------------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "fmt", "config"), [
    ("cls", "pth", {"num_heads": 2}),
    ("mean", "safetensors", {"num_heads": 4, "pool": "mean"}),
])  # fmt: skip
def test_old_layout_vit(tmp_path, pool, fmt, config):
    torch.manual_seed(1)
    heads = config["num_heads"]
    ref = OldViT(image_size=40, patch_size=8, num_classes=7, dim=64, depth=2, heads=heads, mlp_dim=80,
                 dim_head=64 // heads * (2 if pool == "cls" else 1), pool=pool)  # fmt: skip
    _reinit(ref, 40, seed=heads)
    path = _save(ref.state_dict(), tmp_path, fmt, config)
    attend = ref.transformer.layers[-1][0].fn.attend
    cfg = _compare(ref, path, 40, attend, "cls" if pool == "cls" else "mean", 1).cfg
    assert cfg.fc_norm and not cfg.final_norm and cfg.pool == ("token" if pool == "cls" else "mean")


# -- SimpleViT -------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "patch", "config"), [
    (224, 16, None),  # the file cannot say its input size: 224 by default
    (48, 8, {"image_size": 48, "num_heads": 4, "dim_head": 16}),
])  # fmt: skip
def test_simple_vit(tmp_path, size, patch, config):
    torch.manual_seed(2)
    dim_head = 64 if config is None else 16
    ref = SimpleViT(image_size=size, patch_size=patch, num_classes=7, dim=128 if config is None else 64, depth=2,
                    heads=2 if config is None else 4, mlp_dim=96, dim_head=dim_head)  # fmt: skip
    _reinit(ref, size, seed=size)
    path = _save(ref.state_dict(), tmp_path, "safetensors" if config else "pth", config)
    module = _compare(ref, path, size, ref.transformer.layers[-1][0].attend, "mean", 0)
    assert module.cfg.pos == "sincos" and module.cfg.image_size == (size, size)


# -- refusals --------------------------------------------------------------------------------


def _refusal(tmp_path, state: dict, config: dict | None = None) -> str:
    path = _save(state, tmp_path, "pth", config)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("net.pth")
    return msg


def test_missing_tensor_is_named(tmp_path):
    state = dict(_vit(heads=1, dim_head=64).state_dict())
    del state["transformer.layers.1.1.net.4.weight"]
    assert "transformer.layers.1.1.net.4.weight" in _refusal(tmp_path, state)


@pytest.mark.parametrize("change", ["width", "count", "rank"])
def test_wrongly_shaped_pos_embedding_is_named(tmp_path, change):
    state = dict(_vit(heads=1, dim_head=64).state_dict())
    pos = state["pos_embedding"]
    state["pos_embedding"] = {"width": pos[:, :-1], "count": pos[:-1], "rank": pos[None, None]}[change]
    assert "pos_embedding" in _refusal(tmp_path, state)


def test_unknown_heads_ask_for_num_heads(tmp_path):
    state = _vit(heads=3, dim_head=32).state_dict()  # attention 96 wide: not a multiple of 64
    assert "num_heads" in _refusal(tmp_path, state)
    assert "num_heads 5" in _refusal(tmp_path, state, {"num_heads": 5})


def test_unexpected_tensor_and_conflicting_pool_are_refused(tmp_path):
    state = dict(_vit(heads=1, dim_head=64).state_dict())
    assert "cls_token" in _refusal(tmp_path, state, {"pool": "mean"})
    state["transformer.layers.0.0.to_qkv.bias"] = torch.zeros(3 * 64)  # vit-pytorch's to_qkv has no bias
    assert "transformer.layers.0.0.to_qkv.bias" in _refusal(tmp_path, state)
