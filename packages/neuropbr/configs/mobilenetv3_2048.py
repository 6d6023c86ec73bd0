"""Desktop / high-memory student: MobileNetV3-Large + ViT fusion at 2048 → 2048 (no SR head)."""

from neuropbr.student.config import StudentConfig


def get_config() -> StudentConfig:
    cfg = StudentConfig(name="mobilenetv3_2048")
    cfg.model.arch = "mobilenetv3_vit"
    cfg.model.sr_scale = 1
    cfg.data.image_size = 2048
    cfg.data.output_size = 2048
    cfg.training.epochs = 100
    cfg.training.batch_size = 2
    return cfg
