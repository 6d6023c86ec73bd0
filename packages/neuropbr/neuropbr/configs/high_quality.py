"""Highest fidelity: ResNet101 encoder, deeper ViT fusion, longer schedule."""

from neuropbr.train_config import TrainConfig


def get_config() -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.encoder_backbone = "resnet101"
    cfg.model.transformer_depth = 6
    cfg.model.use_gan = True
    cfg.training.epochs = 200
    cfg.optimizer.g_lr = 1e-4
    cfg.optimizer.d_lr = 4e-4
    cfg.optimizer.scheduler = "cosine"
    return cfg
