"""Training loss."""

from __future__ import annotations

import torch
from torch import nn


class CharbonnierLoss(nn.Module):
    """Mean of ``sqrt((x - y)^2 + eps^2)``: L1 away from zero, smooth at zero, robust to outliers."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = prediction.float() - target.float()
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()


class DeblurLoss(nn.Module):
    """Charbonnier plus ``fft_weight`` times the mean absolute difference of the 2-D real FFTs.

    The frequency term is MIMO-UNet's (Cho et al., 2021): blur removes high frequencies,
    whose errors are small per pixel and so weigh little in a pixel loss; in the spectrum they count as
    much as the low ones. Orthonormal FFTs (unlike MIMO-UNet's) keep the term's scale independent of
    the patch size, so one weight serves 128- and 256-pixel patches.
    """

    def __init__(self, eps: float = 1e-3, fft_weight: float = 0.0) -> None:
        super().__init__()
        self.pixel = CharbonnierLoss(eps)
        self.fft_weight = fft_weight

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.pixel(prediction, target)
        if self.fft_weight:
            spectrum = torch.fft.rfft2(prediction.float(), norm="ortho")
            diff = spectrum - torch.fft.rfft2(target.float(), norm="ortho")
            loss = loss + self.fft_weight * torch.view_as_real(diff).abs().mean()
        return loss
