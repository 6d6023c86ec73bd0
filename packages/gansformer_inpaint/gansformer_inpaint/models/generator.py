"""U-Net generator with GANsformer blocks in its bottleneck.

Input: the masked image in [-1, 1] with the hole zeroed, plus the hole mask as a fourth channel (without
it the network must guess where the hole is from the fill colour, and a white hole on a white collar is
invisible). Encoder: ``img_size → img_size/8`` (256 → 32) by strided convs; bottleneck: bipartite
attention between ``latent_num`` latents and the ``latent_dim``-channel grid; decoder: transposed convs
back to full size with skip connections. The output is composed so that known pixels stay exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gansformer_inpaint.models.bipartite import GANsformerBlock
from gansformer_inpaint.models.layers import ConvAct, EqualConv2d, EqualConvTranspose2d

NUM_DOWN = 3  # 256 → 32, as the spec's encoder


def encoder_channels(base: int, top: int) -> list[int]:
    """Widths of the full-resolution stem and the three downsampled stages (last one is ``top``)."""
    return [min(base * 2**i, top) for i in range(NUM_DOWN)] + [top]


class UpBlock(nn.Module):
    """Transposed conv ×2, concatenate the encoder skip, fuse with a 3×3 conv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = EqualConvTranspose2d(in_ch, out_ch, 4, 2, 1)
        self.fuse = ConvAct(out_ch + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.up(x), 0.2) * math.sqrt(2.0)
        return self.fuse(torch.cat([x, skip], dim=1))


class Generator(nn.Module):
    """``forward(masked, mask) -> (raw, composed)``, both (B, 3, H, W) in about [-1, 1]."""

    def __init__(self, img_size: int = 256, base_channels: int = 64, latent_num: int = 32,
                 latent_dim: int = 512, num_heads: int = 8, num_blocks: int = 2) -> None:
        super().__init__()
        self.img_size = img_size
        ch = encoder_channels(base_channels, latent_dim)
        self.stem = ConvAct(4, ch[0])
        self.down = nn.ModuleList(
            nn.Sequential(ConvAct(ch[i], ch[i + 1], stride=2), ConvAct(ch[i + 1], ch[i + 1]))
            for i in range(NUM_DOWN)
        )
        # Learned initial latents (the paper samples them from a mapping network; for inpainting the
        # content comes from the image, so a learned set is the deterministic equivalent).
        self.latents = nn.Parameter(torch.randn(1, latent_num, latent_dim) * 0.1)
        self.blocks = nn.ModuleList(GANsformerBlock(latent_dim, num_heads) for _ in range(num_blocks))
        self.up = nn.ModuleList(UpBlock(ch[i + 1], ch[i], ch[i]) for i in reversed(range(NUM_DOWN)))
        # The 4-channel input joins the last layer so the output sees the exact known pixels at the edge.
        self.head = nn.Sequential(ConvAct(ch[0] + 4, ch[0]), EqualConv2d(ch[0], 3, 1))

    def forward(self, masked: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``masked``: (B, 3, H, W) in [-1, 1]; ``mask``: (B, 1, H, W), 1 = hole."""
        x_in = torch.cat([masked * (1 - mask), mask], dim=1)
        feats = [self.stem(x_in)]
        for stage in self.down:
            feats.append(stage(feats[-1]))
        x = feats[-1]
        latents = self.latents.expand(x.shape[0], -1, -1)
        for block in self.blocks:
            x, latents = block(x, latents)
        for up, skip in zip(self.up, reversed(feats[:-1]), strict=True):
            x = up(x, skip)
        raw = self.head(torch.cat([x, x_in], dim=1))
        return raw, compose(masked, raw, mask)


def compose(masked: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``masked * (1 - mask) + generated * mask``: known pixels are copied, only the hole is generated."""
    return masked * (1 - mask) + generated.clamp(-1, 1) * mask
