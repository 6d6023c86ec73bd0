"""Losses of the teacher."""

from neuropbr.losses.losses import (
    HybridLoss,
    gan_discriminator_loss,
    gan_generator_loss,
    normal_angle,
)

__all__ = ["HybridLoss", "gan_discriminator_loss", "gan_generator_loss", "normal_angle"]
