"""Vision Transformer cross-view fusion: every token of every view attends to all tokens of all views."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neuropbr.models.checkpointing import run_segment


def sincos_2d(height: int, width: int, dim: int, device, dtype) -> torch.Tensor:
    """Fixed 2-D sine/cosine position code ``(H*W, dim)``; works at any feature size (no interpolation)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angles = coord[:, None] * omega[None]
        parts += [angles.sin(), angles.cos()]
    code = torch.cat(parts, dim=1)
    if code.shape[1] < dim:
        code = F.pad(code, (0, dim - code.shape[1]))
    return code.to(dtype)


# Set by ``neuropbr.memory`` while it counts a CUDA step's memory on the CPU: the attention kernel
# CUDA would run there. A plain module global, not a context of the forward call, because activation
# checkpointing reruns the forward during backward, outside any context the caller set up.
attention_kernel_override: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Softmax attention of ``(B, heads, N, head_dim)`` tensors, never materialising ``N × N`` on CUDA."""
    if attention_kernel_override is not None:
        return attention_kernel_override(q, k, v, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (flash/memory-efficient kernels)."""

    def __init__(self, dim: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: attention and MLP, each with a residual connection."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(proj_drop),
                                 nn.Linear(hidden, dim), nn.Dropout(proj_drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossViewFusion(nn.Module):
    """Fuse the bottleneck features of ``num_views`` views into one feature map.

    Each view's ``(C, h, w)`` map is projected to ``dim`` channels and flattened into ``h*w`` tokens,
    tagged with a 2-D position code and a learned view embedding; the ``num_views*h*w`` tokens go through
    ``depth`` transformer blocks together, so attention relates positions across views (where a
    highlight moved, where shading changed). The views' outputs are then concatenated per position and
    mixed by a 1×1 conv. ``depth=0`` keeps only the projection and the 1×1 mix.
    """

    def __init__(self, in_channels: int, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0,
                 num_views: int = 3, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_views = num_views
        self.dim = dim
        self.proj = nn.Conv2d(in_channels, dim, 1)
        self.view_embed = nn.Parameter(torch.zeros(num_views, dim))
        nn.init.trunc_normal_(self.view_embed, std=0.02)
        self.blocks = nn.ModuleList(
            [TransformerBlock(dim, heads, mlp_ratio, attn_drop, proj_drop) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim) if depth > 0 else nn.Identity()
        self.mix = nn.Sequential(nn.Conv2d(dim * num_views, dim, 1), nn.ReLU(inplace=True))
        # Set by the generator: rerun each transformer block during backward.
        self.checkpointing = False

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats``: ``(B*V, C, h, w)`` (views of one sample consecutive) → ``(B, dim, h, w)``."""
        bv, _, h, w = feats.shape
        b, v = bv // self.num_views, self.num_views
        x = self.proj(feats)
        if self.blocks:
            tokens = x.flatten(2).transpose(1, 2).reshape(b, v, h * w, self.dim)
            tokens = tokens + sincos_2d(h, w, self.dim, x.device, x.dtype)[None, None]
            tokens = tokens + self.view_embed[None, :, None, :].to(x.dtype)
            tokens = tokens.reshape(b, v * h * w, self.dim)
            for block in self.blocks:
                tokens = run_segment(block, tokens, enabled=self.checkpointing)
            tokens = self.norm(tokens)
            x = tokens.reshape(b, v, h, w, self.dim).permute(0, 1, 4, 2, 3)
        else:
            x = x.reshape(b, v, self.dim, h, w)
        return self.mix(x.reshape(b, v * self.dim, h, w))
