"""Bipartite attention (Hudson & Zitnick, "Generative Adversarial Transformers", ICML 2021).

A small set of latents talks to the grid of pixel features in two phases:

1. aggregation — latents are the queries, pixels the keys/values: each latent gathers a region;
2. broadcast — pixels are the queries, the *updated* latents keys/values: each pixel receives global
   context.

The cost is O(HW · k) instead of self-attention's O((HW)^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gansformer_inpaint.models.layers import EqualConv2d, EqualLinear


class MultiHeadCrossAttention(nn.Module):
    """Queries from one set, keys/values from another; pre-LayerNorm, output projection starts at zero."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = EqualLinear(dim, dim, bias=False)
        self.to_k = EqualLinear(dim, dim, bias=False)
        self.to_v = EqualLinear(dim, dim, bias=False)
        self.proj = EqualLinear(dim, dim)
        # Zero-initialised residual branch: the block starts as the identity, so the U-Net trains like a
        # plain CNN first and attention grows in only as far as it helps. A randomly initialised branch
        # adds a unit-variance random map of *every* pixel to the bottleneck, which swamped the skip
        # path of the original at step 0.
        nn.init.zeros_(self.proj.weight)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``queries`` (B, Nq, D), ``context`` (B, Nk, D) → update for the queries (B, Nq, D)."""
        b, nq, d = queries.shape
        h = self.num_heads
        q = self.to_q(self.norm_q(queries)).view(b, nq, h, d // h).transpose(1, 2)
        kv = self.norm_kv(context)
        k = self.to_k(kv).view(b, -1, h, d // h).transpose(1, 2)
        v = self.to_v(kv).view(b, -1, h, d // h).transpose(1, 2)
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(d // h), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, nq, d)
        return self.proj(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_mult: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = EqualLinear(dim, dim * hidden_mult)
        self.fc2 = EqualLinear(dim * hidden_mult, dim)
        nn.init.zeros_(self.fc2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class BipartiteAttention(nn.Module):
    """Both phases of bipartite attention between latents (B, k, D) and pixel features (B, D, H, W)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.aggregate = MultiHeadCrossAttention(dim, num_heads)  # latents ← pixels
        self.latent_ff = FeedForward(dim)
        self.broadcast = MultiHeadCrossAttention(dim, num_heads)  # pixels ← updated latents

    def forward(self, pixels: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, hgt, wid = pixels.shape
        tokens = pixels.flatten(2).transpose(1, 2)  # (B, HW, D)
        latents = latents + self.aggregate(latents, tokens)
        latents = latents + self.latent_ff(latents)
        tokens = tokens + self.broadcast(tokens, latents)
        return tokens.transpose(1, 2).reshape(b, d, hgt, wid), latents


class GANsformerBlock(nn.Module):
    """Bipartite attention followed by a residual 3×3 conv pair on the pixel grid."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attention = BipartiteAttention(dim, num_heads)
        self.conv1 = EqualConv2d(dim, dim, 3, padding=1)
        self.conv2 = EqualConv2d(dim, dim, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # residual branch starts at zero, as the attention's

    def forward(self, pixels: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, latents = self.attention(pixels, latents)
        branch = F.leaky_relu(self.conv1(pixels), 0.2) * math.sqrt(2.0)
        pixels = pixels + self.conv2(branch)
        return pixels, latents
