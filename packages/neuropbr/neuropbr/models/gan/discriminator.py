"""Configurable PatchGAN discriminator on the concatenated PBR maps (8 channels)."""

from __future__ import annotations

import torch
from torch import nn


def patchgan_receptive_field(n_layers: int, kernel: int = 4) -> int:
    """Receptive field (pixels) of :class:`PatchDiscriminator` with ``n_layers`` stride-2 convs.

    The stack is ``n_layers`` stride-2 convs then two stride-1 convs, all 4×4:
    3 → 70, 4 → 142, 5 → 286, 6 → 574 (the spec's numbers).
    """
    strides = [2] * n_layers + [1, 1]
    field, jump = 1, 1
    for s in strides:
        field += (kernel - 1) * jump
        jump *= s
    return field


class PatchDiscriminator(nn.Module):
    """pix2pix-style PatchGAN: ``n_layers`` stride-2 4×4 convs (channels ``ndf``·2^i, capped at 8·ndf),
    one stride-1 conv, and a 1-channel stride-1 output conv; one logit per receptive-field patch.

    ``use_sigmoid`` turns logits into probabilities (for BCE on probabilities); hinge and
    BCE-with-logits want raw logits (the default). Instance norm, not batch norm: the batches here are
    one or two 2048² maps (``norm="none"`` drops it, e.g. to measure the receptive field).
    """

    def __init__(self, in_channels: int = 8, ndf: int = 64, n_layers: int = 6, use_sigmoid: bool = False,
                 norm: str = "instance") -> None:
        super().__init__()

        def norm_layer(ch: int) -> nn.Module:
            return nn.InstanceNorm2d(ch, affine=True) if norm == "instance" else nn.Identity()

        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, n_layers):
            out = ndf * min(2**i, 8)
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1, bias=False),
                       norm_layer(out), nn.LeakyReLU(0.2, True)]
            ch = out
        out = ndf * min(2**n_layers, 8)
        layers += [nn.Conv2d(ch, out, 4, stride=1, padding=1, bias=False),
                   norm_layer(out), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(out, 1, 4, stride=1, padding=1)]
        if use_sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        self.n_layers = n_layers
        self.use_sigmoid = use_sigmoid

    @property
    def receptive_field(self) -> int:
        return patchgan_receptive_field(self.n_layers)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, 8, H, W)`` maps (albedo, roughness, metallic in [0, 1]; normal in [-1, 1]) → patch logits."""
        return self.net(maps)


def build_discriminator(model_cfg) -> PatchDiscriminator:
    """From a :class:`~neuropbr.train_config.ModelConfig`: ``simple`` is the classic 3-layer 70×70 PatchGAN."""
    n_layers = 3 if model_cfg.discriminator_type == "simple" else model_cfg.discriminator_n_layers
    return PatchDiscriminator(model_cfg.discriminator_in_channels, model_cfg.discriminator_ndf, n_layers,
                              model_cfg.discriminator_use_sigmoid)
