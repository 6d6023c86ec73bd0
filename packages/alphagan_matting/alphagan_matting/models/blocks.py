"""Building blocks: ResNet bottleneck (with dilation) and atrous spatial pyramid pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (1x1 → 3x3 → 1x1, ×4 expansion); dilation replaces stride in late stages."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(cin: int, width: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # As in DeepLab, the first block of a dilated stage uses half the dilation to avoid gridding.
    layers = [Bottleneck(cin, width, stride=stride, dilation=max(1, dilation // 2))]
    layers += [Bottleneck(width * Bottleneck.expansion, width, dilation=dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3): 1x1, three dilated 3x3 branches and image pooling."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout, kernel=1)] + [conv_bn_relu(cin, cout, dilation=r) for r in rates]
        )
        # No BatchNorm after global pooling: a 1x1 map with batch 1 has no variance to normalise.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(rates) + 2), cout, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [branch(x) for branch in self.branches]
        feats.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="nearest"))
        return self.project(torch.cat(feats, dim=1))
