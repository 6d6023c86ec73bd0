"""Losses: L1, SSIM (albedo), angular normal error, GAN (hinge / BCE), and their weighted sum HybridLoss.

HybridLoss total (every term a mean over pixels and batch)::

    w_l1     · (w_albedo·L1(albedo) + w_roughness·L1(roughness) + w_metallic·L1(metallic) + w_normal_map·L1(normal))
  + w_ssim   · w_albedo · (1 − SSIM(albedo))
  + w_normal · w_normal_map · mean angle(normal_pred, normal_gt)   [radians]
  + w_gan    · generator adversarial loss                            [when discriminator outputs are given]

So raising ``w_normal_map`` emphasises both normal terms and ``w_albedo`` both albedo terms (the spec's
recipes). ``loss_type="l1_only"`` keeps the L1 terms alone. SSIM is the evaluation metric itself
(``shared.metrics.ssim``, differentiable), averaged over the batch, so the loss optimises what is reported.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from neuropbr.maps import MAP_NAMES
from shared.metrics import ssim


def normal_angle(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel angle (radians) ``(B, H, W)`` between normal fields ``(B, 3, H, W)`` (normalised here)."""
    p = F.normalize(pred.float(), dim=1, eps=1e-6)
    t = F.normalize(target.float(), dim=1, eps=1e-6)
    # Clamped away from ±1: acos has an infinite slope there.
    cos = (p * t).sum(dim=1).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    return torch.acos(cos)


def gan_generator_loss(fake_out: torch.Tensor, loss_type: str = "hinge", outputs_are_probs: bool = False) -> torch.Tensor:
    """Generator side: hinge ``−mean(D(fake))``; BCE against "real"."""
    fake_out = fake_out.float()
    if loss_type == "hinge":
        return -fake_out.mean()
    if outputs_are_probs:
        return F.binary_cross_entropy(fake_out.clamp(1e-6, 1 - 1e-6), torch.ones_like(fake_out))
    return F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out))


def gan_discriminator_loss(real_out: torch.Tensor, fake_out: torch.Tensor, loss_type: str = "hinge",
                           outputs_are_probs: bool = False) -> torch.Tensor:
    """Discriminator side: hinge ``mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))``; BCE real→1, fake→0."""
    real_out, fake_out = real_out.float(), fake_out.float()
    if loss_type == "hinge":
        return F.relu(1.0 - real_out).mean() + F.relu(1.0 + fake_out).mean()
    if outputs_are_probs:
        return (F.binary_cross_entropy(real_out.clamp(1e-6, 1 - 1e-6), torch.ones_like(real_out))
                + F.binary_cross_entropy(fake_out.clamp(1e-6, 1 - 1e-6), torch.zeros_like(fake_out)))
    return (F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
            + F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out)))


class HybridLoss(nn.Module):
    """Weighted reconstruction + adversarial loss of the four maps (see the module docstring).

    Args:
        loss_cfg: a :class:`~neuropbr.train_config.LossConfig` (or anything with its attributes).
        discriminator_outputs_probs: the discriminator ends in a sigmoid (``use_sigmoid``).

    ``forward(pred, target, fake_out=None)`` returns ``(total, parts)`` where ``parts`` holds detached
    scalars: ``l1_<map>``, ``ssim_albedo``, ``normal_angle_deg``, ``gan_g`` and ``total``.
    """

    def __init__(self, loss_cfg, discriminator_outputs_probs: bool = False) -> None:
        super().__init__()
        self.cfg = loss_cfg
        self.probs = discriminator_outputs_probs
        self.map_weights = {
            "albedo": loss_cfg.w_albedo, "roughness": loss_cfg.w_roughness,
            "metallic": loss_cfg.w_metallic, "normal": loss_cfg.w_normal_map,
        }

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                fake_out: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        parts: dict[str, torch.Tensor] = {}
        l1_sum = 0.0
        for name in MAP_NAMES:
            l1 = F.l1_loss(pred[name].float(), target[name].float())
            parts[f"l1_{name}"] = l1.detach()
            l1_sum = l1_sum + self.map_weights[name] * l1
        total = cfg.w_l1 * l1_sum
        if cfg.loss_type != "l1_only":
            s = ssim(pred["albedo"], target["albedo"]).mean()
            parts["ssim_albedo"] = s.detach()
            if cfg.w_ssim:
                total = total + cfg.w_ssim * cfg.w_albedo * (1.0 - s)
            angle = normal_angle(pred["normal"], target["normal"]).mean()
            parts["normal_angle_deg"] = torch.rad2deg(angle.detach())
            if cfg.w_normal:
                total = total + cfg.w_normal * cfg.w_normal_map * angle
        if fake_out is not None and cfg.w_gan:
            g = gan_generator_loss(fake_out, cfg.gan_loss_type, self.probs)
            parts["gan_g"] = g.detach()
            total = total + cfg.w_gan * g
        parts["total"] = total.detach()
        return total, parts
