"""`python train.py --config configs/high_quality.py`: the packaged config `neuropbr.configs.high_quality`."""

from neuropbr.configs.high_quality import get_config

__all__ = ["get_config"]
