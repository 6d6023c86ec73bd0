"""Student (distillation) configuration: plain dataclasses, stored in checkpoints as a dict.

A config file (``configs/mobilenetv3_512.py`` ...) defines ``get_config()`` returning a
:class:`StudentConfig`; :func:`load_student_config` loads one by name or path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from neuropbr.train_config import StrictSection
from shared.errors import ConfigError

STUDENT_ARCHS = ("mobilenetv3_vit", "mobilenetv3_convattn")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class StudentModelConfig(StrictSection):
    """Architecture of the student."""

    _section: ClassVar[str] = "model"

    arch: str = "mobilenetv3_vit"  # or "mobilenetv3_convattn"
    pretrained: str | None = None  # local torchvision MobileNetV3-Large weights file; else hub cache / random
    num_views: int = 3
    # ViT fusion (mobilenetv3_vit)
    transformer_dim: int = 256
    transformer_depth: int = 2
    transformer_num_heads: int = 8
    transformer_mlp_ratio: float = 2.0
    # ConvAttn bottleneck (mobilenetv3_convattn)
    convattn_dim: int = 128
    convattn_blocks: int = 3
    plk_kernel_size: int = 17
    plk_channels: int = 32
    # decoder + SR head
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 48, 32, 32])
    sr_scale: int = 2  # 1 = no SR head (output at input resolution)
    sr_channels: int = 32


@dataclass
class StudentDataConfig(StrictSection):
    """What the loader feeds the student."""

    _section: ClassVar[str] = "data"

    image_size: int = 512  # student input side
    output_size: int = 1024  # student output side (= image_size * sr_scale)
    render_curriculum: int = 0  # 0 clean, 1 clean+dirty as on disk, 2 dirty (as the teacher's table)
    val_ratio: float = 0.1
    num_workers: int = 2
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class DistillLossConfig(StrictSection):
    """loss = w_teacher * term(student, teacher) + w_gt * term(student, ground truth).

    term = w_albedo·L1(albedo) + w_roughness·L1(roughness) + w_metallic·L1(metallic)
           + w_normal_map·L1(normal) + w_normal_angle·mean(1 − cos∠(normal, normal_ref))
    """

    w_teacher: float = 0.7
    w_gt: float = 0.3
    w_albedo: float = 1.0
    w_roughness: float = 1.0
    w_metallic: float = 1.0
    w_normal_map: float = 1.0
    w_normal_angle: float = 0.5

    _section: ClassVar[str] = "loss"


@dataclass
class StudentTrainingConfig(StrictSection):
    """Optimisation and bookkeeping."""

    _section: ClassVar[str] = "training"

    epochs: int = 100
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    min_lr: float = 1e-6  # cosine schedule floor
    grad_clip_norm: float = 1.0
    precision: str = "fp32"  # fp32 | fp16 | bf16 (shared.amp)
    seed: int = 42
    device: str = "auto"
    save_every_n_epochs: int = 5
    keep_last: int = 3
    log_every_n_steps: int = 10
    log_images_every_n_epochs: int = 5
    tracker: str = "tensorboard"


@dataclass
class StudentConfig(StrictSection):
    """The student's whole configuration; assigning a key a section does not have raises, naming it."""

    name: str = "mobilenetv3_512"
    model: StudentModelConfig = field(default_factory=StudentModelConfig)
    data: StudentDataConfig = field(default_factory=StudentDataConfig)
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    training: StudentTrainingConfig = field(default_factory=StudentTrainingConfig)

    def validate(self) -> StudentConfig:
        m, d = self.model, self.data
        if m.arch not in STUDENT_ARCHS:
            raise ConfigError(f"model.arch '{m.arch}' unknown; choose one of {', '.join(STUDENT_ARCHS)}")
        if m.sr_scale not in (1, 2, 4):
            raise ConfigError(f"model.sr_scale must be 1, 2 or 4, got {m.sr_scale}")
        if d.image_size % 32:
            raise ConfigError(f"data.image_size must be a multiple of 32 (MobileNetV3 stride), got {d.image_size}")
        if d.output_size != d.image_size * m.sr_scale:
            raise ConfigError(
                f"data.output_size ({d.output_size}) must equal image_size ({d.image_size}) × sr_scale ({m.sr_scale})"
            )
        if len(m.decoder_channels) != 5 or m.decoder_channels[-1] != m.sr_channels:
            raise ConfigError("model.decoder_channels needs 5 entries, the last equal to model.sr_channels "
                              "(so the SR head can be bypassed for --test-resolution)")
        if m.plk_kernel_size % 2 == 0:
            raise ConfigError(f"model.plk_kernel_size must be odd, got {m.plk_kernel_size}")
        if not 0 < m.plk_channels <= m.convattn_dim:
            raise ConfigError("model.plk_channels must be in (0, convattn_dim]")
        if m.transformer_dim % m.transformer_num_heads:
            raise ConfigError("model.transformer_dim must be divisible by transformer_num_heads")
        if d.render_curriculum not in (0, 1, 2):
            raise ConfigError(f"data.render_curriculum must be 0, 1 or 2, got {d.render_curriculum}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_from_dict(data: dict[str, Any]) -> StudentConfig:
    """Rebuild a :class:`StudentConfig` from :meth:`StudentConfig.to_dict` (unknown keys are an error)."""
    cfg = StudentConfig()
    for section in fields(cfg):
        value = data.get(section.name)
        if value is None:
            continue
        current = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(current):
            setattr(cfg, section.name, value)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"config section '{section.name}' must be a mapping, got {type(value).__name__}")
        known = {f.name for f in fields(current)}
        for key, item in value.items():
            if key not in known:
                raise ConfigError(f"config key '{section.name}.{key}' is unknown")
            setattr(current, key, item)
    return cfg.validate()


PRESET_DIR = Path(__file__).resolve().parents[2] / "configs"


def load_student_config(name_or_path: str) -> StudentConfig:
    """Load ``configs/<name>.py`` (a name like ``mobilenetv3_512``) or a Python file defining ``get_config()``."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{name_or_path}.py"
    elif not path.exists() and not path.is_absolute() and path.parent.name == "configs":
        path = PRESET_DIR / path.name  # "configs/x.py" given from outside the package folder
    if not path.is_file():
        raise ConfigError(f"{name_or_path}: student config not found (give a .py file or one of "
                          f"{', '.join(sorted(p.stem for p in PRESET_DIR.glob('*.py')))})")
    spec = importlib.util.spec_from_file_location(f"_neuropbr_student_cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken config file is user input
        raise ConfigError(f"{path}: config file failed to load: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: config file defines no get_config()")
    try:
        cfg = module.get_config()
    except Exception as exc:  # noqa: BLE001 - a user's file: any failure is a config error, named in one line
        raise ConfigError(f"{path}: get_config() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(cfg, StudentConfig):
        raise ConfigError(f"{path}: get_config() must return a StudentConfig, got {type(cfg).__name__}")
    return cfg.validate()
