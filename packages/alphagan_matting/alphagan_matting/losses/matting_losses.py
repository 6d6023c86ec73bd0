"""AlphaGAN training losses: alpha-prediction, composition and adversarial.

The alpha and composition losses follow Lutz et al. (eqs. 2-3, after Xu et al.'s Deep Image Matting):
``sqrt(x² + ε²)`` per pixel (a smooth L1), averaged over the trimap's unknown region only, since the
known regions are copied from the trimap and carry no error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def unknown_mask(trimap: torch.Tensor) -> torch.Tensor:
    """1 where the trimap (0 / 0.5 / 1) is unknown, else 0."""
    return ((trimap > 0.25) & (trimap < 0.75)).to(trimap.dtype)


def _masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.expand_as(per_pixel)
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1.0)


def alpha_loss(pred: torch.Tensor, gt: torch.Tensor, trimap: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Mean of ``sqrt((α_p - α_g)² + ε²)`` over the unknown pixels."""
    diff = pred.float() - gt.float()
    return _masked_mean(torch.sqrt(diff * diff + eps * eps), unknown_mask(trimap))


def composite(alpha: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """``α·F + (1 - α)·B``."""
    return alpha * fg + (1.0 - alpha) * bg


def composition_loss(pred: torch.Tensor, gt: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor,
                     trimap: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Mean over unknown pixels and RGB channels of ``sqrt((c_p - c_g)² + ε²)``, images in 0..1."""
    diff = composite(pred.float(), fg.float(), bg.float()) - composite(gt.float(), fg.float(), bg.float())
    return _masked_mean(torch.sqrt(diff * diff + eps * eps), unknown_mask(trimap))


def gan_loss(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Binary cross-entropy of patch logits against all-real or all-fake (the original GAN loss)."""
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Half the sum of the real and fake BCE terms, so D learns at the pace of G (pix2pix)."""
    return 0.5 * (gan_loss(real_logits, True) + gan_loss(fake_logits, False))
