"""UNet decoder with skips and the four PBR heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuropbr.models.checkpointing import run_segment
from neuropbr.models.encoders.unet import double_conv


class UNetDecoder(nn.Module):
    """Upsample, concatenate the skip of the next finer level, double conv; deepest level first.

    Args:
        in_channels: channels of the fused bottleneck.
        skip_channels: channels of each skip, deepest first (the last one is at full resolution).
        out_channels: channels after each stage (same length as ``skip_channels``).
    """

    def __init__(self, in_channels: int, skip_channels: list[int], out_channels: list[int]) -> None:
        super().__init__()
        stages, prev = [], in_channels
        for skip, out in zip(skip_channels, out_channels, strict=True):
            stages.append(double_conv(prev + skip, out))
            prev = out
        self.stages = nn.ModuleList(stages)
        self.out_channels = prev
        # Set by the generator: rerun each stage (upsample, concatenation, double conv) during backward.
        self.checkpointing = False

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for stage, skip in zip(self.stages, skips, strict=True):
            x = run_segment(_up_cat_conv, stage, x, skip, enabled=self.checkpointing, modules=[stage])
        return x


def _up_cat_conv(stage: nn.Module, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
    return stage(torch.cat([x, skip], dim=1))


NORMAL_DETAIL_CHANNELS = 32


class PBRHeads(nn.Module):
    """Four heads: albedo (3, sigmoid), roughness (1, sigmoid), metallic (1, sigmoid), normal (3, unit).

    With ``detail_channels`` the normal head also reads full-resolution ``detail`` features and predicts
    only the tilt ``(x, y)``; the normal is ``normalize(x, y, 1)``, exactly flat at initialisation.
    """

    def __init__(self, in_channels: int, detail_channels: int = 0) -> None:
        super().__init__()
        self.detail_channels = detail_channels
        self.heads = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True),
                                nn.Conv2d(in_channels, ch, 1))
            for name, ch in (("albedo", 3), ("roughness", 1), ("metallic", 1), ("normal", 3))
        })
        if detail_channels:
            c = NORMAL_DETAIL_CHANNELS
            self.heads["normal"] = nn.Sequential(
                nn.Conv2d(in_channels + detail_channels, c, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, 2, 1))
            # Zero tilt at the start: the mean normal is near flat, so a random one would only cost angle.
            nn.init.zeros_(self.heads["normal"][-1].weight)
            nn.init.zeros_(self.heads["normal"][-1].bias)
            return
        # Start from a flat surface (0, 0, 1) rather than a random direction.
        normal_out = self.heads["normal"][-1]
        nn.init.zeros_(normal_out.bias)
        with torch.no_grad():
            normal_out.bias[2] = 1.0
            normal_out.weight.mul_(0.1)

    def forward(self, x: torch.Tensor, detail: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.detail_channels:
            if detail is None:
                raise ValueError("this normal head needs the full-resolution detail features")
            tilt = self.heads["normal"](torch.cat([x, detail], dim=1))
            normal = torch.cat([tilt, torch.ones_like(tilt[:, :1])], dim=1)
        else:
            normal = self.heads["normal"](x)
        return {
            "albedo": torch.sigmoid(self.heads["albedo"](x)),
            "roughness": torch.sigmoid(self.heads["roughness"](x)),
            "metallic": torch.sigmoid(self.heads["metallic"](x)),
            "normal": F.normalize(normal.float(), dim=1, eps=1e-6).to(normal.dtype),
        }
