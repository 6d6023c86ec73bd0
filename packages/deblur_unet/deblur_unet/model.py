"""DeblurUNet: a 4-level U-Net for motion deblurring (3-channel image in, 3-channel image out).

Inputs and outputs live in [-1, 1] (the training normalisation); there is no final activation, so
the network learns the output scale itself instead of fighting a saturating Tanh.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8


class DoubleConv(nn.Module):
    """(3×3 conv → GroupNorm → ReLU) × 2; GroupNorm because deblurring trains with batches of 4-8."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.GroupNorm(GROUPS, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.GroupNorm(GROUPS, out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """Feature block at one resolution; its output is the skip, the pooled output goes deeper."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv(x)
        return self.pool(skip), skip


class Up(nn.Module):
    """Bilinear ×2 + 3×3 conv (no checkerboard artefacts), concat with the skip, DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
        )
        self.conv = DoubleConv(out_ch * 2, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # Pooling floors odd sizes, so the upsampled map can be a pixel short of its skip. An exported
        # graph must keep the resize unconditionally (at equal sizes it is the identity), or the
        # traced shapes would be frozen to the export example's.
        if x.shape[-2:] != skip.shape[-2:] or torch.onnx.is_in_onnx_export():
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class DeblurUNet(nn.Module):
    """U-Net deblurring network.

    Encoder: 4 blocks at ``base_ch × (1, 2, 4, 8)`` channels, each followed by 2×2 max-pooling;
    bottleneck at ``base_ch × 16``; decoder: 4 bilinear-upsampling blocks with skip connections;
    a 1×1 head to ``out_ch`` channels with no activation. ``base_ch=32`` gives 32→64→128→256, a
    512-channel bottleneck and about 8.6M parameters.

    Any input size works (odd sizes included): skips are matched by interpolation.

    Args:
        in_ch: input channels (3 for RGB).
        out_ch: output channels (3 for RGB).
        base_ch: channels of the first level; must be a multiple of 8 (GroupNorm groups).
        residual: predict a residual and add the input (``out = x + f(x)``); off by default as in the
            original project. Needs ``in_ch == out_ch``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, base_ch: int = 32, residual: bool = False) -> None:
        super().__init__()
        if base_ch <= 0 or base_ch % GROUPS:
            raise ValueError(f"base_ch must be a positive multiple of {GROUPS}, got {base_ch}")
        if residual and in_ch != out_ch:
            raise ValueError(f"residual=True needs in_ch == out_ch, got {in_ch} and {out_ch}")
        self.in_ch, self.out_ch, self.base_ch, self.residual = in_ch, out_ch, base_ch, residual
        widths = [base_ch * m for m in (1, 2, 4, 8)]
        self.downs = nn.ModuleList()
        prev = in_ch
        for width in widths:
            self.downs.append(Down(prev, width))
            prev = width
        self.bottleneck = DoubleConv(prev, base_ch * 16)
        prev = base_ch * 16
        self.ups = nn.ModuleList()
        for width in reversed(widths):
            self.ups.append(Up(prev, width))
            prev = width
        self.final = nn.Conv2d(base_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for down in self.downs:
            h, skip = down(h)
            skips.append(skip)
        h = self.bottleneck(h)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            h = up(h, skip)
        out = self.final(h)
        return x + out if self.residual else out

    def config(self) -> dict[str, int | bool]:
        """Constructor arguments, stored in checkpoints so inference can rebuild the model."""
        return {"in_ch": self.in_ch, "out_ch": self.out_ch, "base_ch": self.base_ch, "residual": self.residual}


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
