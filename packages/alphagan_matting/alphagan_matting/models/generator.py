"""AlphaGAN generator: ResNet-50 encoder on RGB + trimap, dilated stages + ASPP, decoder with skips.

After Lutz et al. (2018): the encoder's first conv takes 4 channels, stages 3 and 4 trade stride for
dilation (output stride 8), ASPP gathers context, and the decoder upsamples bilinearly, unpools with
the first max-pool's indices and concatenates encoder features and the input itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alphagan_matting.models.blocks import ASPP, Bottleneck, conv_bn_relu, make_stage

UNKNOWN = 0.5  # trimap value of the unknown region, as fed to the network (128/255 mapped to exactly 0.5)


def apply_known_regions(alpha: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """Keep ``alpha`` in the unknown region and copy the trimap's 0/1 everywhere else."""
    known_fg = trimap > 0.75
    known_bg = trimap < 0.25
    return torch.where(known_fg, torch.ones_like(alpha), torch.where(known_bg, torch.zeros_like(alpha), alpha))


class AlphaGenerator(nn.Module):
    """``forward(x)`` with ``x = cat(normalised RGB, trimap in {0, 0.5, 1})`` → alpha ``(B, 1, H, W)``.

    Any ``H, W`` works: the input is reflect-padded to a multiple of 8 and the output cropped back.
    """

    def __init__(self, base_width: int = 64, layers: tuple[int, ...] | list[int] = (3, 4, 6, 3),
                 aspp_channels: int = 256) -> None:
        super().__init__()
        # The ImageNet ResNet-50 fits only the paper's widths and depths (a narrowed test model cannot take it).
        self.is_resnet50 = base_width == 64 and tuple(layers) == (3, 4, 6, 3)
        w = base_width
        e = Bottleneck.expansion
        self.conv1 = conv_bn_relu(4, w, kernel=7, stride=2)  # ResNet stem widened to RGB + trimap
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, return_indices=True)
        self.layer1 = make_stage(w, w, layers[0])
        self.layer2 = make_stage(w * e, 2 * w, layers[1], stride=2)
        self.layer3 = make_stage(2 * w * e, 4 * w, layers[2], dilation=2)
        self.layer4 = make_stage(4 * w * e, 8 * w, layers[3], dilation=4)
        self.aspp = ASPP(8 * w * e, aspp_channels)

        skip = max(8, aspp_channels // 4)
        self.skip2 = conv_bn_relu(w * e, skip, kernel=1)  # 1/4 resolution features
        self.dec4 = nn.Sequential(conv_bn_relu(aspp_channels + skip, aspp_channels),
                                  conv_bn_relu(aspp_channels, aspp_channels))
        self.to_unpool = conv_bn_relu(aspp_channels, w, kernel=1)
        self.unpool = nn.MaxUnpool2d(3, stride=2, padding=1)
        self.dec2 = nn.Sequential(conv_bn_relu(2 * w, w), conv_bn_relu(w, w))
        self.dec1 = nn.Sequential(conv_bn_relu(w + 4, w), conv_bn_relu(w, max(8, w // 2)))
        self.head = nn.Conv2d(max(8, w // 2), 1, 3, padding=1)

    def match_encoder(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The entries of ``state`` (our names or torchvision ResNet-50 names) that fit this encoder,
        renamed to ours, and this encoder's weights they leave out.

        A 3-channel ``conv1`` kernel is widened to 4 channels with a zero-initialised trimap channel,
        so a pretrained RGB network starts from its original behaviour.
        """
        renamed = {}
        for key, value in state.items():
            key = key.removeprefix("module.").removeprefix("encoder.")
            if key.startswith("conv1.weight"):
                key = "conv1.0.weight"
            elif key.startswith("bn1."):
                key = "conv1.1." + key[len("bn1."):]
            renamed[key] = value
        own = self.state_dict()
        conv = renamed.get("conv1.0.weight")
        if conv is not None and conv.shape[1] == 3 and own["conv1.0.weight"].shape[1] == 4:
            renamed["conv1.0.weight"] = torch.cat([conv, torch.zeros_like(conv[:, :1])], dim=1)
        encoder = ("conv1.", "layer1.", "layer2.", "layer3.", "layer4.")
        usable = {k: v for k, v in renamed.items()
                  if k.startswith(encoder) and k in own and tuple(own[k].shape) == tuple(v.shape)}
        left_out = [k for k in own if k.startswith(encoder) and k not in usable]
        return usable, left_out

    def load_encoder(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load the encoder weights of ``state`` that fit (see :meth:`match_encoder`); returns their keys."""
        usable, _ = self.match_encoder(state)
        if all(k.endswith("num_batches_tracked") for k in usable):
            # Scalar counters fit any width: alone they mean that no weight fits.
            return []
        self.load_state_dict(usable, strict=False)
        return sorted(usable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % 8, (-width) % 8
        if pad_h or pad_w:
            mode = "reflect" if height > pad_h and width > pad_w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        trimap = x[:, 3:4]

        f1 = self.conv1(x)  # 1/2
        pooled, indices = self.pool(f1)  # 1/4
        f2 = self.layer1(pooled)
        f3 = self.layer2(f2)  # 1/8
        f4 = self.layer4(self.layer3(f3))
        d = self.aspp(f4)

        d = F.interpolate(d, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        d = self.dec4(torch.cat([d, self.skip2(f2)], dim=1))
        d = self.unpool(self.to_unpool(d), indices, output_size=f1.shape[-2:])
        d = self.dec2(torch.cat([d, f1], dim=1))
        d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
        d = self.dec1(torch.cat([d, x], dim=1))
        alpha = torch.sigmoid(self.head(d).float())
        alpha = apply_known_regions(alpha, trimap)
        return alpha[..., :height, :width]
