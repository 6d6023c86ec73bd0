"""PatchGAN discriminator."""

from neuropbr.models.gan.discriminator import (
    PatchDiscriminator,
    build_discriminator,
    patchgan_receptive_field,
)

__all__ = ["PatchDiscriminator", "build_discriminator", "patchgan_receptive_field"]
