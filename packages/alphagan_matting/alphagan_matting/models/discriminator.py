"""PatchGAN discriminator (pix2pix 70x70) on a composite image concatenated with its trimap.

Instance normalisation, not BatchNorm: D sees real+fake batches in its own step and fake-only batches in
G's adversarial pass, so batch statistics would make its verdict on the same fake differ between the
two (and with the batch size and the DDP split). Per-sample statistics make a patch's logit a function
of that sample alone; pix2pix offers this normalisation for its PatchGAN and CycleGAN uses it.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """``forward(cat(composite RGB normalised, trimap))`` → a map of real/fake logits, one per patch.

    Needs inputs of at least 24x24 (the last normalised map must hold more than one position).
    """

    def __init__(self, in_channels: int = 4, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(width * prev, width * mult, 4, stride=stride, padding=1, bias=False),
                nn.InstanceNorm2d(width * mult, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(width * mult, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
