"""Per-view encoders: ResNet (torchvision) or UNet."""

from neuropbr.models.encoders.resnet import ResNetEncoder
from neuropbr.models.encoders.unet import UNetEncoder

__all__ = ["ResNetEncoder", "UNetEncoder"]
