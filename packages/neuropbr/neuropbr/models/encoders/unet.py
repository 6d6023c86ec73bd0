"""Plain UNet encoder (double 3×3 conv stages, max-pool between them)."""

from __future__ import annotations

import torch
from torch import nn

from neuropbr.models.checkpointing import run_segment


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two 3×3 conv-BN-ReLU layers: the UNet building block."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class UNetEncoder(nn.Module):
    """One stage per entry of ``channels``; stage ``i`` works at 1/2**i of the input."""

    def __init__(self, channels: list[int], in_channels: int = 3) -> None:
        super().__init__()
        stages, prev = [], in_channels
        for ch in channels:
            stages.append(double_conv(prev, ch))
            prev = ch
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2)
        self.channels = list(channels)
        self.reductions = [2**i for i in range(len(channels))]
        # Set by the generator: rerun each stage during backward.
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            if i == 0:
                x = run_segment(stage, x, enabled=self.checkpointing)
            else:
                x = run_segment(lambda t, s=stage: s(self.pool(t)), x, enabled=self.checkpointing, modules=[stage])
            feats.append(x)
        return feats
