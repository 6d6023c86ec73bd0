"""`python train.py --config configs/real_cpu.py`: the packaged config `neuropbr.configs.real_cpu`."""

from neuropbr.configs.real_cpu import get_config

__all__ = ["get_config"]
