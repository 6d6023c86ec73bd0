"""Student for iPhone (recommended): MobileNetV3-Large + ViT fusion (dim 256, depth 2), 512 → 1024 via ×2 SR head."""

from neuropbr.student.config import StudentConfig


def get_config() -> StudentConfig:
    cfg = StudentConfig(name="mobilenetv3_512")
    cfg.model.arch = "mobilenetv3_vit"
    cfg.model.transformer_dim = 256
    cfg.model.transformer_depth = 2
    cfg.model.sr_scale = 2
    cfg.data.image_size = 512
    cfg.data.output_size = 1024
    cfg.training.epochs = 100
    cfg.training.batch_size = 8
    return cfg
