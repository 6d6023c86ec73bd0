"""Rapid experimentation: ResNet18, narrower fusion, fewer epochs."""

from neuropbr.train_config import TrainConfig


def get_config() -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.encoder_backbone = "resnet18"
    cfg.model.encoder_stride = 2
    cfg.model.transformer_dim = 512
    cfg.model.transformer_num_heads = 8
    cfg.model.transformer_depth = 2
    cfg.model.decoder_channels = [256, 128, 64, 32, 32]
    cfg.training.epochs = 30
    cfg.training.gan_start_epoch = 3
    cfg.training.save_every_n_epochs = 5
    cfg.optimizer.scheduler_warmup_epochs = 2
    return cfg
