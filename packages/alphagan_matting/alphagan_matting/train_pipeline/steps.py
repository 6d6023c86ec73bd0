"""One training step (D then G) and one test step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from alphagan_matting.losses import (
    alpha_loss,
    composite,
    composition_loss,
    compute_metrics,
    discriminator_loss,
    gan_loss,
)
from alphagan_matting.schemas import Config, GLosses, MattingBatch, Metrics
from alphagan_matting.utils import unit_to_trimap
from shared.amp import MixedPrecision
from shared.distributed import unwrap_model


@dataclass
class TrainParts:
    """Everything a step touches: models (possibly DDP-wrapped), optimizers, schedulers, AMP."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    amp_g: MixedPrecision
    amp_d: MixedPrecision
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


class StepOutput(NamedTuple):
    losses: GLosses
    d_loss: float | None  # None: D was not updated, or its step was skipped
    pred: torch.Tensor
    stepped: bool  # G's optimizer step went through (a non-finite one is skipped)


def _d_input(parts: TrainParts, image01: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    return torch.cat([parts.normalize(image01), trimap], dim=1)


def train_step(parts: TrainParts, batch: MattingBatch, cfg: Config, global_step: int,
               max_grad_norm: float | None) -> StepOutput:
    """Update D (every ``update_n_batches`` steps, when the GAN loss is on), then G.

    A scheduler advances only with a step that went through: the cyclic LR follows optimizer steps.
    """
    t = cfg.train
    use_gan = bool(t.use_gan_loss)
    x = torch.cat([batch.image, batch.trimap], dim=1)
    with parts.amp_g.autocast():
        pred = parts.generator(x).float()
    pred_comp = composite(pred, batch.fg, batch.bg)

    d_value = None
    if use_gan and global_step % t.D.update_n_batches == 0:
        parts.discriminator.train()
        # Real and fake in one forward (DDP wants one forward per backward); D normalises each sample by its
        # own statistics, so its verdict on the fakes is the one G's pass below gets for the same weights.
        d_in = torch.cat([_d_input(parts, batch.composite, batch.trimap),
                          _d_input(parts, pred_comp.detach(), batch.trimap)], dim=0)
        with parts.amp_d.autocast():
            logits = parts.discriminator(d_in).float()
        real, fake = logits.chunk(2, dim=0)
        d_loss = discriminator_loss(real, fake)
        if parts.amp_d.backward_and_step(d_loss, parts.opt_d, max_grad_norm=max_grad_norm).stepped:
            parts.sched_d.step()
            d_value = float(d_loss.detach())

    l_alpha = alpha_loss(pred, batch.alpha, batch.trimap)
    l_comp = composition_loss(pred, batch.alpha, batch.fg, batch.bg, batch.trimap)
    if use_gan:
        # G's adversarial term goes through the plain D (no DDP sync: D is not stepped on it) with
        # D frozen so its weights collect no gradient from G's loss.
        plain_d = unwrap_model(parts.discriminator)
        plain_d.requires_grad_(False)
        with parts.amp_d.autocast():
            l_gan = gan_loss(plain_d(_d_input(parts, pred_comp, batch.trimap)).float(), True)
        plain_d.requires_grad_(True)
    else:
        l_gan = torch.zeros((), device=pred.device)
    total = t.losses.lambda_gan_g * l_gan + t.losses.lambda_alpha_g * l_alpha + t.losses.lambda_comp_g * l_comp
    stepped = parts.amp_g.backward_and_step(total, parts.opt_g, max_grad_norm=max_grad_norm).stepped
    if stepped:
        parts.sched_g.step()
    losses = GLosses(total=total.detach(), alpha=l_alpha.detach(), comp=l_comp.detach(), gan=l_gan.detach())
    return StepOutput(losses, d_value, pred.detach(), stepped)


@torch.no_grad()
def test_step(generator: nn.Module, batch: MattingBatch, precision_ctx) -> tuple[list[Metrics], torch.Tensor]:
    """Predict the batch and compute the four metrics per sample (trimap's unknown region)."""
    x = torch.cat([batch.image, batch.trimap], dim=1)
    with precision_ctx:
        pred = generator(x).float().clamp(0, 1)
    metrics = []
    pred_np = pred[:, 0].cpu().numpy().astype(np.float64)
    gt_np = batch.alpha[:, 0].cpu().numpy().astype(np.float64)
    tri_np = batch.trimap[:, 0].cpu().numpy()
    for p, g, tri in zip(pred_np, gt_np, tri_np, strict=True):
        metrics.append(compute_metrics(p, g, unit_to_trimap(tri)))
    return metrics, pred
