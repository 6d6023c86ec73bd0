"""PSNR, SSIM and mask overlap metrics on ``(B, C, H, W)`` tensors in 0..1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in 0..1 (``inf`` for identical images)."""
    mse = float(F.mse_loss(pred.float(), target.float()))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian 11×11 window, sigma 1.5, K1=0.01, K2=0.03), per channel."""
    pred, target = pred.float(), target.float()
    channels = pred.shape[1]
    kernel = _gaussian_window(window).to(pred.device).expand(channels, 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    sigma_x = blur(pred * pred) - mu_x**2
    sigma_y = blur(target * target) - mu_y**2
    sigma_xy = blur(pred * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return float(ssim_map.mean())


def mask_iou_dice(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> tuple[float, float]:
    """IoU and Dice of the masks binarised at ``threshold``; both 1.0 when both masks are empty."""
    p, t = pred >= threshold, target >= threshold
    inter = float((p & t).sum())
    union = float((p | t).sum())
    total = float(p.sum() + t.sum())
    iou = 1.0 if union == 0 else inter / union
    dice = 1.0 if total == 0 else 2 * inter / total
    return iou, dice
