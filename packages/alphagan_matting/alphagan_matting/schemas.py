"""Dataclasses for the config, the batches, the losses and the metrics.

The config classes mirror the spec's YAML one to one (same section and key names); ``cfg_loader``
fills them from a file and refuses unknown or missing keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ColabCfg:
    use_colab: int = 0
    best_chkp_name: str = "best_chkp"
    last_chkp_name: str = "last_chkp"


@dataclass
class GeneralCfg:
    random_seed: int = 1669
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    batch_size: int = 5
    checkpoints_dir: str = "checkpoints/"
    log_dir: str = "tb_logger/"
    colab: ColabCfg = field(default_factory=ColabCfg)


@dataclass
class SchedulerCfg:
    start_lr: float = 1e-3
    end_lr: float = 3e-4
    step_size_up: int = 4000


@dataclass
class DCfg:
    update_n_batches: int = 1
    scheduler: SchedulerCfg = field(default_factory=lambda: SchedulerCfg(1e-5, 1.5e-4, 4000))


@dataclass
class GCfg:
    scheduler: SchedulerCfg = field(default_factory=SchedulerCfg)


@dataclass
class OptimizerCfg:
    weight_decay: float = 5e-4


@dataclass
class TrainLoggingCfg:
    log_io_n_batches: int = 10
    log_lr_n_batches: int = 50
    log_curr_loss_n_batches: int = 1


@dataclass
class LossesCfg:
    lambda_gan_g: float = 0.15
    lambda_alpha_g: float = 1.0
    lambda_comp_g: float = 1.0


@dataclass
class AmpCfg:
    use_amp: int = 1
    dtype: str = "bf16"
    use_grad_scaler: int = 0


@dataclass
class TrainCfg:
    use_gan_loss: int = 1
    save_chkp_n_epoches: int = 1
    crop_size: int = 256
    D: DCfg = field(default_factory=DCfg)
    G: GCfg = field(default_factory=GCfg)
    optimizer: OptimizerCfg = field(default_factory=OptimizerCfg)
    logging: TrainLoggingCfg = field(default_factory=TrainLoggingCfg)
    epoches: int = 5000
    losses: LossesCfg = field(default_factory=LossesCfg)
    amp: AmpCfg = field(default_factory=AmpCfg)


@dataclass
class TestLoggingCfg:
    log_curr_mets_n_batches: int = 1
    log_io_n_batches: int = 10


@dataclass
class TestCfg:
    resize_size: int = 256
    logging: TestLoggingCfg = field(default_factory=TestLoggingCfg)


@dataclass
class ModelCfg:
    """Not in the spec's YAML (optional section): the generator's size. Defaults are ResNet-50."""

    base_width: int = 64
    layers: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    aspp_channels: int = 256
    disc_width: int = 64


@dataclass
class Config:
    general: GeneralCfg = field(default_factory=GeneralCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    test: TestCfg = field(default_factory=TestCfg)
    model: ModelCfg = field(default_factory=ModelCfg)


# Sections that may be left out of a YAML file (everything else is required, as in the spec).
OPTIONAL_SECTIONS: frozenset[str] = frozenset({"model"})


@dataclass
class MattingBatch:
    """One batch. ``image`` is the normalised composite; the rest are in 0..1.

    ``trimap`` holds exactly 0 (background), 0.5 (unknown) and 1 (foreground).
    """

    image: torch.Tensor  # (B, 3, H, W) normalised with mean/std
    trimap: torch.Tensor  # (B, 1, H, W)
    alpha: torch.Tensor  # (B, 1, H, W)
    fg: torch.Tensor  # (B, 3, H, W)
    bg: torch.Tensor  # (B, 3, H, W)
    composite: torch.Tensor  # (B, 3, H, W) the un-normalised composite, 0..1

    def to(self, device: torch.device) -> MattingBatch:
        return MattingBatch(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})

    @classmethod
    def from_dict(cls, data: dict[str, torch.Tensor]) -> MattingBatch:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class GLosses:
    total: torch.Tensor
    alpha: torch.Tensor
    comp: torch.Tensor
    gan: torch.Tensor


@dataclass
class Metrics:
    sad: float
    mse: float
    grad: float
    conn: float

    def as_dict(self) -> dict[str, float]:
        return {"SAD": self.sad, "MSE": self.mse, "Grad": self.grad, "Conn": self.conn}
