"""`python train.py --config configs/fast_iteration.py`: the packaged config `neuropbr.configs.fast_iteration`."""

from neuropbr.configs.fast_iteration import get_config

__all__ = ["get_config"]
