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
