"""Losses: non-saturating GAN, masked L1 (hole and valid regions), R1 gradient penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(D(fake)) + softplus(-D(real))`` = ``-log(1 - σ(D(fake))) - log σ(D(real))``."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(-D(fake))`` = ``-log σ(D(fake))``: strong gradients while D still wins."""
    return F.softplus(-fake_logits).mean()


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean |pred - target| over the pixels where ``mask`` is 1 (all channels); 0 when the mask is empty.

    Normalising by the region's own area (not the image's) keeps the loss scale the same for a 5 % and
    a 50 % hole, so small holes are not drowned out by large ones in a batch.
    """
    weight = mask.expand_as(pred)
    return ((pred - target).abs() * weight).sum() / (weight.sum() + eps)


def reconstruction_loss(raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                        hole_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(hole_weight * hole_l1 + valid_l1) / (hole_weight + 1)``, plus both parts for logging."""
    hole = masked_l1(raw, target, mask)
    valid = masked_l1(raw, target, 1 - mask)
    return (hole_weight * hole + valid) / (hole_weight + 1), hole, valid


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||∇_x D(x)||²`` at real images (Mescheder et al. 2018)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
