"""Losses (alpha, composition, GAN) and matting metrics (SAD, MSE, Gradient, Connectivity)."""

from alphagan_matting.losses.matting_losses import (
    alpha_loss,
    composite,
    composition_loss,
    discriminator_loss,
    gan_loss,
    unknown_mask,
)
from alphagan_matting.losses.metrics import compute_metrics, connectivity_error, gradient_error, mse, sad

__all__ = ["alpha_loss", "composite", "composition_loss", "compute_metrics", "connectivity_error",
           "discriminator_loss", "gan_loss", "gradient_error", "mse", "sad", "unknown_mask"]
