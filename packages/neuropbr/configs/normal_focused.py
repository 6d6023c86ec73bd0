"""`python train.py --config configs/normal_focused.py`: the packaged config `neuropbr.configs.normal_focused`."""

from neuropbr.configs.normal_focused import get_config

__all__ = ["get_config"]
