"""ResNet encoder (torchvision ResNet-18/34/50/101/152) returning a feature pyramid."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from neuropbr.models.checkpointing import run_segment
from shared.pretrained import TORCHVISION_FILES, load_torchvision_weights

_STAGE_CHANNELS = {
    "resnet18": [64, 64, 128, 256, 512],
    "resnet34": [64, 64, 128, 256, 512],
    "resnet50": [64, 256, 512, 1024, 2048],
    "resnet101": [64, 256, 512, 1024, 2048],
    "resnet152": [64, 256, 512, 1024, 2048],
}

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
        if pretrained_path or not quiet:
            # quiet: the weights come from a checkpoint right after, so the hub cache is not read either.
            load_torchvision_weights(net, TORCHVISION_FILES[backbone], pretrained_path or None,
                                     what=f"{backbone} encoder", ignore=("fc.",))
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
        # Set by the generator: rerun the stem and each residual block during backward.
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        on = self.checkpointing
        feats = [run_segment(self.stem, x, enabled=on)]
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            h = feats[-1]
            for j, block in enumerate(layer):
                if i == 0 and j == 0:
                    # The max-pool rides in the first block's segment: its int64 indices are as large
                    # as the pooled map itself.
                    h = run_segment(lambda t, b=block: b(self.pool(t)), h, enabled=on, modules=[block])
                else:
                    h = run_segment(block, h, enabled=on)
            feats.append(h)
        return feats
