"""NeuroPBR: reconstruct albedo, roughness, metallic and normal maps from three rendered views.

Teacher (this package's core): :class:`MultiViewPBRGenerator` trained by ``train.py``.
Maps convention: see :mod:`neuropbr.maps`.
"""

from neuropbr.maps import MAP_CHANNELS, MAP_NAMES, maps_to_tensor, tensor_to_maps
from neuropbr.models.generator import MultiViewPBRGenerator
from neuropbr.train_config import TrainConfig, get_default_config, load_config

__all__ = [
    "MAP_CHANNELS", "MAP_NAMES", "MultiViewPBRGenerator", "TrainConfig", "get_default_config", "load_config",
    "maps_to_tensor", "tensor_to_maps",
]
