"""Discriminator: strided convs, one bipartite-attention block, global pooling.

It sees the image *and* the hole mask, so it judges the fill against the known surroundings instead of
having to find the hole first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gansformer_inpaint.models.bipartite import BipartiteAttention
from gansformer_inpaint.models.layers import ConvAct, EqualLinear

NUM_DOWN = 4  # 256 → 16; the pooling makes the size itself irrelevant


class Discriminator(nn.Module):
    """``forward(image, mask) -> logits`` of shape (B,); any input size (global pooling at the end)."""

    def __init__(self, channels: int = 64, max_channels: int = 512, latent_num: int = 32,
                 num_heads: int = 8) -> None:
        super().__init__()
        widths = [min(channels * 2**i, max_channels) for i in range(NUM_DOWN + 1)]
        self.stem = ConvAct(4, widths[0])
        self.down = nn.Sequential(*(ConvAct(widths[i], widths[i + 1], stride=2) for i in range(NUM_DOWN)))
        dim = widths[-1]
        heads = num_heads if dim % num_heads == 0 else 1
        self.latents = nn.Parameter(torch.randn(1, latent_num, dim) * 0.1)
        self.attention = BipartiteAttention(dim, heads)
        self.fc = EqualLinear(2 * dim, dim)
        self.out = EqualLinear(dim, 1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.down(self.stem(torch.cat([image, mask * 2 - 1], dim=1)))
        x, latents = self.attention(x, self.latents.expand(x.shape[0], -1, -1))
        # Global pooling of both the pixel grid and the latents: local texture and global layout.
        pooled = torch.cat([x.mean(dim=(2, 3)), latents.mean(dim=1)], dim=1)
        return self.out(F.leaky_relu(self.fc(pooled), 0.2) * math.sqrt(2.0)).squeeze(1)
