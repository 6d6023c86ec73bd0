"""Alternative iPhone student: MobileNetV3-Large + ConvAttn bottleneck (17×17 pre-computed large kernel,
3 blocks, O(N) memory), 1024 → 1024 (no SR head), 60 epochs."""

from neuropbr.student.config import StudentConfig


def get_config() -> StudentConfig:
    cfg = StudentConfig(name="convattn_student")
    cfg.model.arch = "mobilenetv3_convattn"
    cfg.model.convattn_blocks = 3
    cfg.model.plk_kernel_size = 17
    cfg.model.sr_scale = 1
    cfg.data.image_size = 1024
    cfg.data.output_size = 1024
    cfg.training.epochs = 60
    cfg.training.batch_size = 4
    return cfg
