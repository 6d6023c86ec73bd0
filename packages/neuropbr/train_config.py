"""Shim for the spec's ``from train_config import TrainConfig, get_default_config`` (run from this folder)."""

from neuropbr.train_config import *  # noqa: F403
from neuropbr.train_config import (  # noqa: F401
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    TrainConfig,
    TrainingConfig,
    TransformConfig,
    get_default_config,
    get_lightweight_config,
    get_quick_test_config,
    load_config,
)
