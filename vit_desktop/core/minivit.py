"""The article-style minimal Vision Transformer, written batch-first.

The state-dict layout is the one of the classic from-scratch ViT (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``transformer.layers.N.{self_attn,linear1,linear2,norm1,norm2}``,
``mlp_head``), so checkpoints trained with that code load here.  Differences from the
tutorial code, on purpose:

* tokens are (B, N, D) and every attention is ``batch_first=True``: the tutorial feeds
  (B, N, D) to an ``nn.TransformerEncoder`` built for (N, B, D), which makes each token
  attend across the batch instead of across the image;
* the encoder blocks are our own small modules with the same parameter names as
  ``nn.TransformerEncoderLayer``, so the attention is always computed through
  ``self_attn`` (PyTorch's fused encoder fast path would bypass it and hide the attention);
* an optional convolutional stem before the patch projection and an optional final norm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class MiniViTConfig:
    image_size: int = 224
    patch_size: int = 16
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    norm_first: bool = True
    final_norm: bool = True
    head_norm: bool = False
    stem_channels: tuple[int, ...] = field(default_factory=tuple)
    stem_strides: tuple[int, ...] = field(default_factory=tuple)  # default: 2 for each conv
    input_norm: bool = False  # standardise each image per channel before the stem
    layer_norm_eps: float = 1e-5

    @property
    def strides(self) -> tuple[int, ...]:
        return self.stem_strides or (2,) * len(self.stem_channels)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stem_channels"] = list(self.stem_channels)
        d["stem_strides"] = list(self.stem_strides)
        return d


class PatchEmbedding(nn.Module):
    """Optional 3×3 conv stem, then a conv with kernel = stride = the remaining patch size."""

    def __init__(self, cfg: MiniViTConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        strides = cfg.strides
        if len(strides) != len(cfg.stem_channels):
            raise ValueError("stem_strides must give one stride per stem convolution")
        for ch, stride in zip(cfg.stem_channels, strides):
            layers += [
                nn.Conv2d(in_ch, ch, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = ch
        stem_stride = math.prod(strides)
        if cfg.patch_size % stem_stride:
            raise ValueError(
                f"patch size {cfg.patch_size} is not a multiple of the stem stride {stem_stride}"
            )
        if layers:
            self.stem = nn.Sequential(*layers)
        else:
            self.stem = None
        k = cfg.patch_size // stem_stride
        self.proj = nn.Conv2d(in_ch, cfg.embed_dim, kernel_size=k, stride=k)
        self.num_patches = cfg.grid * cfg.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)
        x = self.proj(x)  # (B, D, rows, cols)
        return x.flatten(2).transpose(1, 2)  # (B, rows*cols, D)


class EncoderLayer(nn.Module):
    """A transformer encoder block with ``nn.TransformerEncoderLayer``'s parameter names."""

    def __init__(self, cfg: MiniViTConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.self_attn = nn.MultiheadAttention(d, cfg.num_heads, batch_first=True)
        self.linear1 = nn.Linear(d, cfg.mlp_dim)
        self.linear2 = nn.Linear(cfg.mlp_dim, d)
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm_first = cfg.norm_first

    def _sa(self, x: torch.Tensor) -> torch.Tensor:
        return self.self_attn(x, x, x, need_weights=False)[0]

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self._sa(self.norm1(x))
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x))
        return self.norm2(x + self._ff(x))


class Encoder(nn.Module):
    def __init__(self, cfg: MiniViTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps) if cfg.final_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) if self.norm is not None else x


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position table of shape (grid*grid, dim)."""
    if dim % 4:
        raise ValueError("embedding width must be a multiple of 4 for 2-D sin-cos")
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    omega = 1.0 / (10000 ** (torch.arange(dim // 4) / (dim // 4 - 1 or 1)))
    out = []
    for coord in (ys, xs):
        ang = coord.flatten()[:, None].float() * omega[None, :]
        out += [ang.sin(), ang.cos()]
    return torch.cat(out, dim=1)


class MiniViT(nn.Module):
    """Conv patch embedding, CLS token, learnable positions, pre-norm encoder, linear head."""

    def __init__(self, cfg: MiniViTConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbedding(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        pos = torch.zeros(1, self.patch_embed.num_patches + 1, d)
        if d % 4 == 0:
            pos[0, 1:] = sincos_2d(cfg.grid, d) * 0.5
        self.pos_embed = nn.Parameter(pos)
        self.transformer = Encoder(cfg)
        if cfg.head_norm:
            self.mlp_head = nn.Sequential(
                nn.LayerNorm(d, eps=cfg.layer_norm_eps), nn.Linear(d, cfg.num_classes)
            )
        else:
            self.mlp_head = nn.Linear(d, cfg.num_classes)
        self._init()

    def _init(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.xavier_uniform_(m.in_proj_weight)
                nn.init.zeros_(m.in_proj_bias)
        head = self.mlp_head[-1] if isinstance(self.mlp_head, nn.Sequential) else self.mlp_head
        nn.init.zeros_(head.bias)
        w = self.patch_embed.proj.weight
        nn.init.normal_(w, std=math.sqrt(2.0 / (w.shape[1] * w.shape[2] * w.shape[3])))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All output tokens (B, 1 + rows*cols, D), CLS first."""
        return self.transformer(self.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens (B, 1 + rows*cols, D) the first encoder layer takes: CLS first,
        position embeddings added."""
        b = x.shape[0]
        if self.config.input_norm:
            # Per-image contrast normalisation: shapes of any colour on any background
            # look alike to the stem, which is what makes the demo model learn quickly.
            mean = x.mean(dim=(2, 3), keepdim=True)
            std = x.std(dim=(2, 3), keepdim=True)
            x = (x - mean) / (std + 1e-2)
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        return x + self.pos_embed

    def classify_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits from the last encoder layer's output (final norm, CLS token, head), for
        a sequence of any length (token occlusion drops patch tokens)."""
        norm = self.transformer.norm
        return self.mlp_head((norm(tokens) if norm is not None else tokens)[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_head(self.forward_features(x)[:, 0])
