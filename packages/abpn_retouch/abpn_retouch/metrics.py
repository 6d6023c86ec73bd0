"""Mask overlap of the predicted retouch mask and the ground-truth one (PSNR/SSIM: ``shared.metrics``)."""

from __future__ import annotations

import torch


def mask_iou_dice(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> tuple[float, float]:
    """IoU and Dice of the masks binarised at ``threshold``; both 1.0 when both masks are empty."""
    p, t = pred >= threshold, target >= threshold
    inter = float((p & t).sum())
    union = float((p | t).sum())
    total = float(p.sum() + t.sum())
    iou = 1.0 if union == 0 else inter / union
    dice = 1.0 if total == 0 else 2 * inter / total
    return iou, dice
