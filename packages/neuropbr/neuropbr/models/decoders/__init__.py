"""Decoders and output heads."""

from neuropbr.models.decoders.unet import PBRHeads, UNetDecoder

__all__ = ["PBRHeads", "UNetDecoder"]
