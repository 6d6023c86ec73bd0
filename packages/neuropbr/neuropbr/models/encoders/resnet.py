"""ResNet encoder (torchvision ResNet-18/34/50/101/152) returning a feature pyramid."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision
from torch import nn

from shared.checkpoint import CheckpointError, load_checkpoint

_STAGE_CHANNELS = {
    "resnet18": [64, 64, 128, 256, 512],
    "resnet34": [64, 64, 128, 256, 512],
    "resnet50": [64, 256, 512, 1024, 2048],
    "resnet101": [64, 256, 512, 1024, 2048],
    "resnet152": [64, 256, 512, 1024, 2048],
}
_warned_random_init = False


class ResNetEncoder(nn.Module):
    """Five feature maps: stem, layer1..layer4.

    ``stride`` is the stem conv's stride: 2 is torchvision's (features at 1/2 … 1/32), 1 keeps the first
    feature map at full resolution (1/1 … 1/16), which is what the spec means by "keep 2048 resolution".

    Attributes:
        channels: channels of each returned feature map.
        reductions: downsampling factor of each returned feature map.
    """

    def __init__(self, backbone: str = "resnet50", stride: int = 2, in_channels: int = 3,
                 pretrained_path: str | None = None, quiet: bool = False) -> None:
        super().__init__()
        if backbone not in _STAGE_CHANNELS:
            raise ValueError(f"unknown ResNet backbone {backbone!r}")
        net = getattr(torchvision.models, backbone)(weights=None)
        if pretrained_path:
            _load_pretrained(net, pretrained_path)
        elif not quiet:
            _say_random_init(backbone)
        if in_channels != 3 or stride != 2:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=stride, padding=3, bias=False)
            if in_channels == 3:
                net.conv1.weight.data.copy_(old.weight.data)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = list(_STAGE_CHANNELS[backbone])
        self.reductions = [stride * 2**i for i in range(5)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s0 = self.stem(x)
        s1 = self.layer1(self.pool(s0))
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        s4 = self.layer4(s3)
        return [s0, s1, s2, s3, s4]


def _say_random_init(backbone: str) -> None:
    global _warned_random_init
    if not _warned_random_init:
        print(f"note: {backbone} encoder uses random initialisation (no pretrained weights file given; "
              "set model.pretrained_path / --pretrained PATH to a torchvision state dict)", file=sys.stderr)
        _warned_random_init = True


def _load_pretrained(net: nn.Module, path: str) -> None:
    """Load a torchvision ResNet state dict from a local file (``fc`` weights are ignored)."""
    state = load_checkpoint(Path(path))
    state = state.get("state_dict", state.get("model", state))
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: not weights for this ResNet ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:3]})")
