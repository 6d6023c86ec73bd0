"""Emphasise normals: heavier angular and normal-L1 weights (the spec's recipe)."""

from neuropbr.train_config import TrainConfig


def get_config() -> TrainConfig:
    cfg = TrainConfig()
    cfg.loss.w_normal = 1.5
    cfg.loss.w_normal_map = 2.0
    cfg.loss.w_ssim = 0.2
    return cfg
