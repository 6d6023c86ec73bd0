"""The spec's losses, each a plain function, and their weighted sum.

Images are ``(B, 3, H, W)`` in 0..1; ``mask`` is the soft GT mask at the image's resolution
``(B, 1, H, W)`` (upsampled from the half-resolution recipe output by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shared.pretrained import TORCHVISION_FILES, load_torchvision_weights

EPS = 1e-6


@dataclass(frozen=True)
class LossWeights:
    """The spec's default weights."""

    masked_l1: float = 1.3
    global_l1: float = 1.0
    edge: float = 1.0
    high_freq: float = 0.7
    perceptual: float = 0.5
    dice: float = 1.0


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked pixels: ``Σ m|p - t| / (C Σ m)``; 0 for an empty mask."""
    weight = mask.expand_as(pred)
    return (weight * (pred - target).abs()).sum() / (weight.sum() + EPS)


def global_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    weight = kernel.to(x.dtype).to(x.device).expand(channels, 1, *kernel.shape)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=channels)


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel horizontal and vertical Sobel responses (replicate-padded, same size)."""
    return _depthwise(x, SOBEL_X), _depthwise(x, SOBEL_X.t())


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """Per-channel 4-neighbour Laplacian (replicate-padded, same size): the high-frequency band."""
    return _depthwise(x, LAPLACIAN)


def masked_edge_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked L1 between Sobel gradients (both directions) of output and target."""
    (pgx, pgy), (tgx, tgy) = sobel(pred), sobel(target)
    return 0.5 * (masked_l1(pgx, tgx, mask) + masked_l1(pgy, tgy, mask))


def masked_high_freq_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked L1 between Laplacians of output and target."""
    return masked_l1(laplacian(pred), laplacian(target), mask)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice on sigmoid(logits) vs the soft GT mask: ``1 - (2Σpg + 1) / (Σp + Σg + 1)`` per sample, mean.

    The +1 smoothing makes an empty GT mask with an empty prediction a loss of 0, not 0/0.
    """
    prob = torch.sigmoid(logits.float()).flatten(1)
    gt = target.float().flatten(1)
    dice = (2 * (prob * gt).sum(1) + 1.0) / (prob.sum(1) + gt.sum(1) + 1.0)
    return (1.0 - dice).mean()


class VGGPerceptualLoss(nn.Module):
    """L1 between VGG16 features up to ``relu3_3``, memory-optimised for 2048 px patches.

    Frozen, truncated after the last layer used, target features under ``no_grad``, and both images
    area-downsampled so the long side is at most ``max_size`` before VGG sees them. Weights come from
    ``weights_path`` or the torch hub cache; without either the network is randomly initialised
    (random conv features still compare local structure) and this is said once.
    """

    LAST_LAYER = 16  # index of relu3_3 in torchvision's vgg16().features

    def __init__(self, weights_path: str | None = None, max_size: int = 512, quiet: bool = False) -> None:
        super().__init__()
        from torchvision.models import vgg16

        vgg = vgg16(weights=None)
        # The whole network takes the file, so a wrong one is refused by name; only the features are kept.
        self.source = load_torchvision_weights(vgg, TORCHVISION_FILES["vgg16"], weights_path or None,
                                               what="VGG16 (perceptual loss)", ignore=("classifier.",), quiet=quiet)
        features = vgg.features[: self.LAST_LAYER + 1]
        for param in features.parameters():
            param.requires_grad_(False)
        self.features = features.eval()
        self.max_size = max_size
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        super().train(mode)
        self.features.eval()  # frozen: never switch to train mode
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        long_side = max(x.shape[-2:])
        if long_side > self.max_size:
            x = F.interpolate(x, scale_factor=self.max_size / long_side, mode="area")
        return (x - self.mean) / self.std

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self.features(self._prepare(target))
        return F.l1_loss(self.features(self._prepare(pred)), target_features)


class RetouchLoss(nn.Module):
    """Weighted sum of all terms; returns ``(total, {name: value})``."""

    def __init__(self, weights: LossWeights = LossWeights(), vgg_weights: str | None = None,
                 perceptual_size: int = 512, quiet: bool = False) -> None:
        super().__init__()
        self.weights = weights
        self.perceptual = VGGPerceptualLoss(vgg_weights, perceptual_size, quiet) if weights.perceptual > 0 else None

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask_logits: torch.Tensor,
                gt_mask_half: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred, target = pred.float(), target.float()
        mask_full = F.interpolate(gt_mask_half.float(), size=pred.shape[-2:], mode="bilinear", align_corners=False)
        terms = {
            "masked_l1": masked_l1(pred, target, mask_full),
            "global_l1": global_l1(pred, target),
            "edge": masked_edge_loss(pred, target, mask_full),
            "high_freq": masked_high_freq_loss(pred, target, mask_full),
            "dice": dice_loss(mask_logits, gt_mask_half),
        }
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(pred, target)
        total = sum(getattr(self.weights, name) * value for name, value in terms.items())
        return total, terms
