"""ABPN: Adaptive Blend Pyramid Network (after Lao et al., CVPR 2022) with a mask head.

The expensive network (``LRNet``) only ever sees a copy of the input downsampled ``2**pyramid_levels``
times. It predicts a *blend layer* ``B`` relative to that low-resolution input (linear-light blending,
``R = I + 2B - 1``) plus mask logits saying where it retouches. The adaptive blend pyramid carries ``B``
up one level at a time: upsample, then a light refinement guided by that level's Laplacian
(high-frequency) band of the input. At full resolution the work per pixel is one bilinear upsample,
two 1×1/3×3 convolutions with few channels and the blend itself, so the cost at 4K–8K stays small.

Shapes for an input ``(B, 3, H, W)`` and ``L = pyramid_levels``:

* level ``L``: ``I_L`` ``(B, 3, H/2^L, W/2^L)`` → LRNet → blend ``B_L`` (3 ch), mask logits (1 ch)
* level ``l < L``: ``B_l = refine_l(up(B_{l+1}), I_l - up(I_{l+1}))`` ``(B, 3, H/2^l, W/2^l)``
* output ``R = clamp(I + 2 B_0 - 1, 0, 1)`` ``(B, 3, H, W)``; mask logits resized to ``(B, 1, H/2, W/2)``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ABPNConfig:
    """Plain hyperparameters of the network (stored in checkpoints)."""

    pyramid_levels: int = 1
    base_channels: int = 32
    refine_channels: int = 16


def linear_light(image: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """Linear-light blend mode: ``I + 2B - 1``; ``B = 0.5`` leaves the image unchanged."""
    return image + 2.0 * blend - 1.0


def _conv(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.LeakyReLU(0.2, inplace=True),
    )


class ContextBlock(nn.Module):
    """Residual dilated convs gated by a wide local average (context over ~150 full-res pixels).

    The context is a sliding-window mean, not a global one, so the block is translation-equivariant:
    a tile of a large photo gives the same result as the same region of the whole photo, and tiled
    inference shows no seams.
    """

    def __init__(self, channels: int, window: int = 7) -> None:
        super().__init__()
        self.local = nn.Sequential(_conv(channels, channels, dilation=2), _conv(channels, channels, dilation=4))
        self.context = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Sigmoid())
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        pooled = F.avg_pool2d(x, self.window, stride=1, padding=self.window // 2, count_include_pad=False)
        return x + y * self.context(pooled)


class LRNet(nn.Module):
    """Context-aware local retouching network on the low-resolution image (a small U-Net).

    Returns the blend layer (sigmoid, 0..1, 0.5 = unchanged) and mask logits, both at its input size.
    """

    def __init__(self, base: int = 32) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(_conv(3, base), _conv(base, base))
        self.enc2 = _conv(base, base * 2, stride=2)
        self.enc3 = _conv(base * 2, base * 4, stride=2)
        self.context = nn.Sequential(ContextBlock(base * 4), ContextBlock(base * 4))
        self.dec2 = _conv(base * 4 + base * 2, base * 2)
        self.dec1 = _conv(base * 2 + base, base)
        self.blend_head = nn.Conv2d(base, 3, 3, padding=1)
        self.mask_head = nn.Sequential(_conv(base, base // 2), nn.Conv2d(base // 2, 1, 1))
        # Start as the identity retouch (blend = 0.5): training begins from "change nothing".
        nn.init.zeros_(self.blend_head.weight)
        nn.init.zeros_(self.blend_head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.context(self.enc3(e2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return torch.sigmoid(self.blend_head(d1)), self.mask_head(d1)


class BlendRefine(nn.Module):
    """One pyramid level: refine the upsampled blend layer with the level's high-frequency band.

    A residual correction from a 3×3 then 1×1 conv on ``[blend, high_freq]`` (6 → c → 3 channels),
    zero-initialised so an untrained level passes the blend layer through.
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(6, channels, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(channels, 3, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, blend: torch.Tensor, high_freq: torch.Tensor) -> torch.Tensor:
        return (blend + self.body(torch.cat([blend, high_freq], 1))).clamp(0.0, 1.0)


class ABPN(nn.Module):
    """Image ``(B, 3, H, W)`` in 0..1 → ``(retouched (B, 3, H, W), mask logits (B, 1, H/2, W/2))``.

    Any ``H``, ``W``: the input is reflect-padded to a multiple of ``2**(levels + 2)`` and cropped back.
    """

    def __init__(self, config: ABPNConfig | None = None) -> None:
        super().__init__()
        self.config = config or ABPNConfig()
        if self.config.pyramid_levels < 1:
            raise ValueError(f"pyramid_levels must be >= 1, got {self.config.pyramid_levels}")
        self.lrnet = LRNet(self.config.base_channels)
        self.refiners = nn.ModuleList(BlendRefine(self.config.refine_channels)
                                      for _ in range(self.config.pyramid_levels))

    @property
    def multiple(self) -> int:
        return 2 ** (self.config.pyramid_levels + 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        # Gaussian-free pyramid: area downsampling is exact averaging, cheap and alias-safe enough here.
        levels = [x]
        for _ in range(self.config.pyramid_levels):
            levels.append(F.avg_pool2d(levels[-1], 2))
        blend, mask_logits = self.lrnet(levels[-1])
        for level in range(self.config.pyramid_levels - 1, -1, -1):
            image = levels[level]
            up_image = F.interpolate(levels[level + 1], size=image.shape[-2:], mode="bilinear", align_corners=False)
            up_blend = F.interpolate(blend, size=image.shape[-2:], mode="bilinear", align_corners=False)
            blend = self.refiners[level](up_blend, image - up_image)
        out = linear_light(x, blend).clamp(0.0, 1.0)[..., :height, :width]
        mask_size = (max(height // 2, 1), max(width // 2, 1))
        padded_half = (x.shape[-2] // 2, x.shape[-1] // 2)
        if mask_logits.shape[-2:] != padded_half:
            mask_logits = F.interpolate(mask_logits, size=padded_half, mode="bilinear", align_corners=False)
        mask_logits = mask_logits[..., : mask_size[0], : mask_size[1]]
        return out, mask_logits
