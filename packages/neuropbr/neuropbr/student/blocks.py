"""Parts shared by both students: the multi-view MobileNetV3 encoder, the skip decoder, SR and PBR heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import ConfigError
from shared.pretrained import TORCHVISION_FILES, load_torchvision_weights

# MobileNetV3-Large feature indices whose outputs feed the decoder: strides 2, 4, 8, 16, 32.
SKIP_INDICES = (1, 3, 6, 12, 15)
SKIP_CHANNELS = (16, 24, 40, 112, 160)


def build_mobilenet_features(pretrained: str | None = None) -> nn.Sequential:
    """``torchvision`` MobileNetV3-Large ``features[:16]``; ImageNet weights from a local file when found.

    ``pretrained``: a weights file, ``None`` for the torch hub cache, or ``"none"`` when the weights come
    from a student checkpoint right after (nothing is read then). Never downloads: without a file the
    encoder starts from random initialisation (said once).
    """
    from torchvision.models import mobilenet_v3_large

    model = mobilenet_v3_large(weights=None)
    if pretrained != "none":
        # The classifier is dropped below, so a file with another head (or none) still fits.
        load_torchvision_weights(model, TORCHVISION_FILES["mobilenet_v3_large"], pretrained or None,
                                 what="MobileNetV3-Large student encoder", ignore=("classifier.",))
    return model.features[: SKIP_INDICES[-1] + 1]


class MultiViewEncoder(nn.Module):
    """One MobileNetV3-Large applied to every view; returns per-view features at strides 2..32."""

    def __init__(self, pretrained: str | None = None) -> None:
        super().__init__()
        self.features = build_mobilenet_features(pretrained)

    def forward(self, views: torch.Tensor) -> list[torch.Tensor]:
        """``views`` ``(B, V, 3, H, W)`` → list of ``(B, V, C_i, H/s_i, W/s_i)``."""
        b, v = views.shape[:2]
        x = views.flatten(0, 1)
        skips = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in SKIP_INDICES:
                skips.append(x.unflatten(0, (b, v)))
        return skips


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.Hardswish(inplace=True),
        )


class UpBlock(nn.Module):
    """×2 bilinear upsample, concatenate the (view-averaged) skip, two convs."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(ConvBNAct(cin + skip, cout), ConvBNAct(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class SkipDecoder(nn.Module):
    """Five ×2 stages from stride 32 back to the input resolution, using the stride 16..2 skips."""

    def __init__(self, bottleneck: int, channels: list[int]) -> None:
        super().__init__()
        if len(channels) != 5:
            raise ConfigError(f"model.decoder_channels needs 5 entries (strides 16, 8, 4, 2, 1), got {channels}")
        skips = list(reversed(SKIP_CHANNELS[:-1])) + [0]  # 112, 40, 24, 16, none
        stages, cin = [], bottleneck
        for cout, skip in zip(channels, skips, strict=True):
            stages.append(UpBlock(cin, skip, cout))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin

    def forward(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """``skips``: view-fused features at strides 2, 4, 8, 16 (the stride-32 one is the bottleneck)."""
        x = bottleneck
        ordered = list(reversed(skips)) + [None]
        for stage, skip in zip(self.stages, ordered, strict=True):
            x = stage(x, skip)
        return x


class SRHead(nn.Module):
    """Trained ×``scale`` upscaler (conv → pixel shuffle → conv); identity for ``scale=1``."""

    def __init__(self, channels: int, scale: int, hidden: int = 32) -> None:
        super().__init__()
        self.scale = scale
        if scale == 1:
            self.body = nn.Identity()
            self.out_channels = channels
            return
        layers: list[nn.Module] = []
        cin = channels
        for _ in range({2: 1, 4: 2}[scale]):
            layers += [nn.Conv2d(cin, hidden * 4, 3, padding=1), nn.PixelShuffle(2), nn.Hardswish(inplace=True)]
            cin = hidden
        layers.append(ConvBNAct(hidden, hidden))
        self.body = nn.Sequential(*layers)
        self.out_channels = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PBRHeads(nn.Module):
    """Four maps: albedo (3, 0..1), roughness (1, 0..1), metallic (1, 0..1), normal (3, unit length)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.conv(x)
        normal = out[:, 5:8]
        # Normalising by hand (not F.normalize) keeps the graph to ops every converter knows.
        normal = normal / torch.sqrt((normal * normal).sum(dim=1, keepdim=True) + 1e-6)
        return {
            "albedo": torch.sigmoid(out[:, 0:3]),
            "roughness": torch.sigmoid(out[:, 3:4]),
            "metallic": torch.sigmoid(out[:, 4:5]),
            "normal": normal,
        }


MAP_NAMES = ("albedo", "roughness", "metallic", "normal")
MAP_CHANNELS = {"albedo": 3, "roughness": 1, "metallic": 1, "normal": 3}
