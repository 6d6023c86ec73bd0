"""AlphaGAN generator and PatchGAN discriminator."""

from alphagan_matting.models.discriminator import PatchDiscriminator
from alphagan_matting.models.generator import AlphaGenerator, apply_known_regions

__all__ = ["AlphaGenerator", "PatchDiscriminator", "apply_known_regions"]
