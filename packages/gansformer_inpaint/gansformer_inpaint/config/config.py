"""Configuration: the spec's defaults, as one plain dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from shared.errors import ConfigError


@dataclass
class Config:
    """Every hyperparameter of a run. Defaults are the spec's (``src/config/config.py``)."""

    # Model architecture
    img_size: int = 256
    base_channels: int = 64  # encoder width at full resolution; doubles per stride-2 stage up to latent_dim
    latent_num: int = 32
    latent_dim: int = 512
    num_heads: int = 8
    num_gansformer_blocks: int = 2
    d_channels: int = 64
    # Training
    learning_rate: float = 0.002
    d_lr_ratio: float = 1.0  # D lr = learning_rate * d_lr_ratio (before the lazy-R1 correction)
    adam_beta1: float = 0.0  # StyleGAN2's betas: momentum makes GAN dynamics oscillate
    adam_beta2: float = 0.99
    num_epochs: int = 3
    batch_size: int = 16
    l1_weight: float = 100.0
    hole_weight: float = 6.0  # hole L1 counts this much more than valid L1 (valid pixels are pasted back)
    adv_weight: float = 1.0
    r1_gamma: float = 10.0
    d_reg_interval: int = 16
    max_grad_norm: float = 10.0
    precision: str = "fp32"
    # Data
    data_root: str = "dataset/celeba_hq_256"
    workers: int = 2
    synthetic: bool = False
    synthetic_size: int = 16
    mask_threshold: int = 24  # |masked - gt| above this (any channel, 0..255) marks a hole pixel
    random_mask_prob: float = 0.5  # chance a real pair's hole is a random strokes + boxes mask instead (per epoch)
    flip: bool = True  # random horizontal flips of real pairs (faces are near-symmetric)
    val_root: str = ""  # held-out pairs for validation; empty: the first 4 training pairs, their own holes
    val_interval: int = 0  # steps between validations (0: at the end of each epoch); also at a budget stop
    # Run
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    checkpoint_dir: str = "checkpoints"
    save_interval: int = 500  # steps between periodic checkpoints
    keep_last: int = 0  # keep this run's newest N periodic checkpoints (0 = all)
    sample_interval: int = 1  # epochs between sample grids
    log_interval: int = 10  # steps between tracker logs
    max_steps: int = 0  # stop after this many steps in total (0 = run all epochs)

    def validate(self) -> Config:
        """Raise :class:`ConfigError` for values the model or loop cannot work with."""
        if self.img_size < 16 or self.img_size % 8:
            raise ConfigError(f"img_size must be a multiple of 8 and at least 16, got {self.img_size}")
        if self.latent_dim % self.num_heads:
            raise ConfigError(f"latent_dim {self.latent_dim} must be divisible by num_heads {self.num_heads}")
        for name in ("latent_num", "latent_dim", "num_heads", "batch_size", "base_channels", "d_channels",
                     "d_reg_interval", "save_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.random_mask_prob <= 1:
            raise ConfigError(f"random_mask_prob must be in [0, 1], got {self.random_mask_prob}")
        if self.val_interval < 0:
            raise ConfigError(f"val_interval must be >= 0 (0: every epoch), got {self.val_interval}")
        if self.keep_last < 0:
            raise ConfigError(f"keep_last must be >= 0 (0 keeps all), got {self.keep_last}")
        if self.num_epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.num_epochs}")
        if self.num_gansformer_blocks < 0:
            raise ConfigError(f"num_gansformer_blocks must be >= 0, got {self.num_gansformer_blocks}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"precision must be fp32, fp16 or bf16, got {self.precision}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a (checkpoint's) dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
