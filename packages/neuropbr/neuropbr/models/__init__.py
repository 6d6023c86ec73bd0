"""Models: the multi-view generator, its parts, and the PatchGAN discriminator."""

from neuropbr.models.gan.discriminator import (
    PatchDiscriminator,
    build_discriminator,
    patchgan_receptive_field,
)
from neuropbr.models.generator import MultiViewPBRGenerator

__all__ = ["MultiViewPBRGenerator", "PatchDiscriminator", "build_discriminator", "patchgan_receptive_field"]
