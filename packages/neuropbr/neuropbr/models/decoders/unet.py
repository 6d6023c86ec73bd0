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


# The photometric gate's start, sigmoid(0) = 0.5 of the classical tilt (times 1 - metallic, about 0.5 at
# the start): on held-out real materials a damped photometric-stereo normal beats the flat one, on
# highlights it does not, and the head learns which is which from there.
PRIOR_GATE_LOGIT = 0.0
# Photometric normals steeper than this (z below it) are clipped before they become slopes (x/z, y/z).
PRIOR_MIN_Z = 0.2


class PBRHeads(nn.Module):
    """Four heads: albedo (3, sigmoid), roughness (1, sigmoid), metallic (1, sigmoid), normal (3, unit).

    With ``detail_channels`` the normal head also reads full-resolution ``detail`` features and predicts
    only the tilt ``(x, y)``; the normal is ``normalize(x, y, 1)``, exactly flat at initialisation.
    With ``prior`` as well, forward takes a ``prior`` normal (photometric stereo) and the head predicts a
    per-pixel gate ``g`` and a residual tilt ``r``: the normal is ``normalize(g · slope(prior) + r, 1)``,
    ``g`` scaled by ``1 - metallic`` (the predicted one): metals have no diffuse shading to read a normal from.
    """

    def __init__(self, in_channels: int, detail_channels: int = 0, prior: bool = False) -> None:
        super().__init__()
        if prior and not detail_channels:
            raise ValueError("a normal prior needs the detail features")
        self.detail_channels = detail_channels
        self.prior = prior
        self.heads = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True),
                                nn.Conv2d(in_channels, ch, 1))
            for name, ch in (("albedo", 3), ("roughness", 1), ("metallic", 1), ("normal", 3))
        })
        if detail_channels:
            c = NORMAL_DETAIL_CHANNELS
            self.heads["normal"] = nn.Sequential(
                nn.Conv2d(in_channels + detail_channels, c, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, 3 if prior else 2, 1))
            # Zero tilt at the start: the mean normal is near flat, so a random one would only cost angle.
            nn.init.zeros_(self.heads["normal"][-1].weight)
            nn.init.zeros_(self.heads["normal"][-1].bias)
            if prior:
                with torch.no_grad():
                    self.heads["normal"][-1].bias[2] = PRIOR_GATE_LOGIT
            return
        # Start from a flat surface (0, 0, 1) rather than a random direction.
        normal_out = self.heads["normal"][-1]
        nn.init.zeros_(normal_out.bias)
        with torch.no_grad():
            normal_out.bias[2] = 1.0
            normal_out.weight.mul_(0.1)

    def forward(self, x: torch.Tensor, detail: torch.Tensor | None = None,
                prior: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        metallic = torch.sigmoid(self.heads["metallic"](x))
        if self.detail_channels:
            if detail is None:
                raise ValueError("this normal head needs the full-resolution detail features")
            tilt = self.heads["normal"](torch.cat([x, detail], dim=1))
            if self.prior:
                if prior is None:
                    raise ValueError("this normal head needs the prior normal")
                slope = prior[:, :2] / prior[:, 2:3].clamp_min(PRIOR_MIN_Z)
                # Detached: the normal loss must not bend the metallic map to silence a bad prior.
                gate = torch.sigmoid(tilt[:, 2:3]) * (1.0 - metallic.detach())
                tilt = gate * slope.to(tilt.dtype) + tilt[:, :2]
            normal = torch.cat([tilt, torch.ones_like(tilt[:, :1])], dim=1)
        else:
            normal = self.heads["normal"](x)
        return {
            "albedo": torch.sigmoid(self.heads["albedo"](x)),
            "roughness": torch.sigmoid(self.heads["roughness"](x)),
            "metallic": metallic,
            "normal": F.normalize(normal.float(), dim=1, eps=1e-6).to(normal.dtype),
        }
