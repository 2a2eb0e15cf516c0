"""One Vision Transformer module for the layouts people fine-tune in: timm, Hugging Face, DeiT,
vit-pytorch.

They all compute the same network — patches embedded, prefix tokens (CLS, DeiT's
distillation token, register tokens) put in front, position embeddings added, pre-norm
blocks, a final norm, a pooled token to a linear head — and differ only in names and a few
switches.  :class:`TokenViTConfig` holds the switches; each family module
(:mod:`.families`) turns its library's state dict into this module's parameter names (which
are timm's) and its settings into a config, so the attention the app captures is always
computed in one place (:class:`Attention`, whose ``observer`` sees the queries and keys) and
a new layout is a new key mapping, not a new network.

The switches, and which library uses them:

* ``patch_embed``: ``"conv"`` (timm, HF: a convolution with kernel = stride = patch) or
  ``"linear"`` (vit-pytorch: pixels flattened as (p1 p2 c), optional LayerNorms before and
  after the projection: ``patch_norms``);
* prefix tokens: ``cls_token``, ``dist_token`` (DeiT distilled), ``registers`` (timm's
  ``reg_token``); position embeddings ``"learned"`` (covering the prefix tokens unless
  ``pos_prefix`` is false — timm's ``no_embed_class``), ``"sincos"`` (vit-pytorch's SimpleViT:
  fixed 2-D sine-cosine, not in the state dict) or ``"none"``;
* blocks: ``qkv_bias``, ``qk_norm`` (LayerNorm per head on queries and keys), ``layer_scale``,
  ``head_dim`` (vit-pytorch lets heads × head_dim differ from the width), ``proj`` (vit-pytorch
  drops the output projection for one full-width head), ``eps`` (timm 1e-6, HF 1e-12,
  vit-pytorch 1e-5);
* the end: ``final_norm``, ``pool`` (``"token"``: the CLS token; ``"avg"``: the mean of the
  patch tokens, as timm; ``"mean"``: the mean of every token, as vit-pytorch), ``fc_norm``
  (a LayerNorm after pooling), ``dist_head`` (DeiT: the CLS and distillation heads averaged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from .results import TokenLayout

POOLS = ("token", "avg", "mean")
POSITIONS = ("learned", "sincos", "none")


@dataclass(frozen=True)
class TokenViTConfig:
    grid: tuple[int, int]  # (rows, cols) of patches the position embeddings are for
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_dim: int
    num_classes: int
    head_dim: int = 0  # 0: width // heads
    in_chans: int = 3
    patch_embed: str = "conv"
    patch_norms: bool = False
    patch_bias: bool = True
    cls_token: bool = True
    dist_token: bool = False
    registers: int = 0
    pos: str = "learned"
    pos_prefix: bool = True
    pre_norm: bool = False
    qkv_bias: bool = True
    qk_norm: bool = False
    proj: bool = True
    proj_bias: bool = True
    layer_scale: bool = False
    final_norm: bool = True
    pool: str = "token"
    fc_norm: bool = False
    head_bias: bool = True
    dist_head: bool = False
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"unknown pooling {self.pool!r}")
        if self.pos not in POSITIONS:
            raise ValueError(f"unknown position embedding {self.pos!r}")
        if self.patch_embed not in ("conv", "linear"):
            raise ValueError(f"unknown patch embedding {self.patch_embed!r}")
        if self.pool == "token" and not self.cls_token:
            raise ValueError("token pooling needs a CLS token")
        if self.dist_head and not self.dist_token:
            raise ValueError("a distillation head needs a distillation token")
        if self.pos == "sincos" and self.width % 4:
            raise ValueError("sine-cosine positions need a width divisible by 4")

    @property
    def inner_dim(self) -> int:
        return self.heads * (self.head_dim or self.width // self.heads)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.cls_token) + int(self.dist_token) + self.registers

    @property
    def image_size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch_size, self.grid[1] * self.patch_size

    @property
    def layout(self) -> TokenLayout:
        names = (("CLS",) if self.cls_token else ()) + (("distillation",) if self.dist_token else ())
        names += tuple(f"register {i + 1}" for i in range(self.registers))
        return TokenLayout(prefix=names, query="cls" if self.pool == "token" else "mean")


def sincos_2d(rows: int, cols: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (rows·cols, dim), as vit-pytorch's SimpleViT."""
    y, x = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    omega = torch.arange(dim // 4) / max(1, dim // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).float()


def resample_positions(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int],
                       prefix: int) -> torch.Tensor:  # fmt: skip
    """Position embeddings (1, prefix + rows·cols, D) for a ``new`` grid: the patch part
    resampled bicubically with antialiasing in float32 (timm's ``resample_abs_pos_embed``),
    the prefix positions kept."""
    if tuple(old) == tuple(new):
        return pos
    head, grid = pos[:, :prefix], pos[:, prefix:]
    d = grid.shape[-1]
    grid = grid.reshape(1, old[0], old[1], d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new, mode="bicubic", antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], d).to(pos.dtype)
    return torch.cat([head, grid], dim=1)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: TokenViTConfig) -> None:
        super().__init__()
        p, c = cfg.patch_size, cfg.in_chans
        self.patch_size = p
        self.linear = cfg.patch_embed == "linear"
        if self.linear:
            self.norm_in = nn.LayerNorm(p * p * c, eps=cfg.eps) if cfg.patch_norms else nn.Identity()
            self.proj = nn.Linear(p * p * c, cfg.width, bias=cfg.patch_bias)
            self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps) if cfg.patch_norms else nn.Identity()
        else:
            self.proj = nn.Conv2d(c, cfg.width, p, p, bias=cfg.patch_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.linear:
            return self.proj(x).flatten(2).transpose(1, 2)
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, p1, p2, c
        x = x.reshape(b, (h // p) * (w // p), p * p * c)
        return self.norm(self.proj(self.norm_in(x)))


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``; ``observer``, when
    set (attention capture), is called with the queries and keys (B, H, N, d) of every forward.

    ``explicit``, when set (class-specific maps, :mod:`.explain_model`), switches to the explicit
    computation A = softmax(q·kᵀ/√d), out = A·v (timm's unfused path) and is called with the
    attention probabilities A (B, H, N, N) before they are used, so a backward pass can give
    their gradient; unset (the default), the fused kernel runs as before."""

    def __init__(self, cfg: TokenViTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.inner_dim // cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.inner_dim, bias=cfg.qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=cfg.eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=cfg.eps) if cfg.qk_norm else nn.Identity()
        self.proj = nn.Linear(cfg.inner_dim, cfg.width, bias=cfg.proj_bias) if cfg.proj else nn.Identity()
        self.observer = None
        self.explicit = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.observer is not None:
            self.observer(q, k)
        if self.explicit is not None:
            attn = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            self.explicit(attn)
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, cfg: TokenViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: TokenViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.width) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = Mlp(cfg)
        self.ls2 = LayerScale(cfg.width) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class TokenViT(nn.Module):
    """The network :class:`TokenViTConfig` describes; parameters are named as in timm."""

    def __init__(self, cfg: TokenViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trained_positions: tuple[tuple[int, int], torch.Tensor] | None = None
        d = cfg.width
        self.patch_embed = PatchEmbed(cfg)
        if cfg.cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if cfg.dist_token:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        if cfg.registers:
            self.reg_token = nn.Parameter(torch.zeros(1, cfg.registers, d))
        rows, cols = cfg.grid
        if cfg.pos == "learned":
            n = rows * cols + (cfg.num_prefix_tokens if cfg.pos_prefix else 0)
            self.pos_embed = nn.Parameter(torch.randn(1, n, d) * 0.02)
        elif cfg.pos == "sincos":
            self.register_buffer("pos_embed", sincos_2d(rows, cols, d)[None], persistent=False)
        self.norm_pre = nn.LayerNorm(d, eps=cfg.eps) if cfg.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.eps) if cfg.final_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(d, eps=cfg.eps) if cfg.fc_norm else nn.Identity()
        self.head = nn.Linear(d, cfg.num_classes, bias=cfg.head_bias)
        if cfg.dist_head:
            self.head_dist = nn.Linear(d, cfg.num_classes, bias=cfg.head_bias)

    @property
    def layout(self) -> TokenLayout:
        return self.cfg.layout

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def attention_modules(self) -> list[Attention]:
        return [b.attn for b in self.blocks]

    def _prefix(self, b: int) -> list[torch.Tensor]:
        out = []
        if self.cfg.cls_token:
            out.append(self.cls_token.expand(b, -1, -1))
        if self.cfg.dist_token:
            out.append(self.dist_token.expand(b, -1, -1))
        if self.cfg.registers:
            out.append(self.reg_token.expand(b, -1, -1))
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens (B, prefix + rows·cols, D) the first block takes: patches embedded, prefix
        tokens in front, position embeddings added, ``norm_pre``."""
        cfg = self.cfg
        rows, cols = x.shape[-2] // cfg.patch_size, x.shape[-1] // cfg.patch_size
        if (rows, cols) != tuple(cfg.grid):
            raise ValueError(
                f"input of {rows}×{cols} patches, the model is set for {cfg.grid[0]}×{cfg.grid[1]}"
            )
        x = self.patch_embed(x)
        prefix = self._prefix(x.shape[0])
        if cfg.pos == "none":
            x = torch.cat([*prefix, x], dim=1)
        elif cfg.pos_prefix and cfg.pos == "learned":
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        else:
            x = torch.cat([*prefix, x + self.pos_embed.to(x.dtype)], dim=1)
        return self.norm_pre(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def classify_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits from the last block's output tokens (final norm, pooling, head): with
        :meth:`embed` and the blocks, the forward pass in three parts, for a sequence of any
        length (token occlusion drops patch tokens)."""
        return self._pool_head(self.norm(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool_head(self.forward_features(x))

    def _pool_head(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.pool == "token":
            pooled = x[:, 0]
        elif cfg.pool == "avg":
            pooled = x[:, cfg.num_prefix_tokens :].mean(dim=1)
        else:
            pooled = x.mean(dim=1)
        logits = self.head(self.fc_norm(pooled))
        if cfg.dist_head:
            logits = (logits + self.head_dist(self.fc_norm(x[:, int(cfg.cls_token)]))) / 2
        return logits

    def set_grid(self, grid: tuple[int, int]) -> None:
        """Run on a ``grid`` of patches from now on: learned position embeddings resampled
        (:func:`resample_positions`), fixed ones recomputed."""
        cfg = self.cfg
        grid = (int(grid[0]), int(grid[1]))
        if grid == tuple(cfg.grid):
            return
        if cfg.pos == "learned":
            # Always from the trained embeddings, so going back to the trained size is exact.
            if self.trained_positions is None:
                self.trained_positions = (tuple(cfg.grid), self.pos_embed.detach().clone())
            trained_grid, trained = self.trained_positions
            prefix = cfg.num_prefix_tokens if cfg.pos_prefix else 0
            with torch.no_grad():
                new = resample_positions(trained, trained_grid, grid, prefix).to(self.pos_embed.device)
            self.pos_embed = nn.Parameter(new)
        elif cfg.pos == "sincos":
            pos = sincos_2d(grid[0], grid[1], cfg.width)[None].to(self.pos_embed.device)
            self.register_buffer("pos_embed", pos, persistent=False)
        self.cfg = replace(cfg, grid=grid)


def parameter_count(cfg: TokenViTConfig) -> int:
    """The weight matrices of ``cfg``'s network (biases and norms add a little): what a file
    must hold at least, checked before the module is allocated."""
    d, p = cfg.width, cfg.patch_size
    pos = math.prod(cfg.grid) * d if cfg.pos == "learned" else 0
    block = d * 3 * cfg.inner_dim + (cfg.inner_dim * d if cfg.proj else 0) + 2 * d * cfg.mlp_dim
    heads = d * cfg.num_classes * (2 if cfg.dist_head else 1)
    return cfg.in_chans * p * p * d + pos + cfg.depth * block + heads
