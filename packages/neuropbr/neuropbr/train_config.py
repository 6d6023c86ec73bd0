"""Training configuration for the NeuroPBR multi-view fusion teacher.

Six dataclass sections (``data``, ``model``, ``loss``, ``optimizer``, ``training``, ``transform``) with
every key the spec names and its default. A config travels inside checkpoints as a plain dict
(:meth:`TrainConfig.to_dict`) and is rebuilt with :meth:`TrainConfig.from_dict`, so loading a
checkpoint never unpickles Python objects.

Presets: ``default``, ``quick_test``, ``lightweight`` (here), and the files ``configs/high_quality.py``,
``configs/fast_iteration.py``, ``configs/normal_focused.py``. :func:`load_config` accepts a preset name
or the path of any Python file defining ``get_config()``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from shared.errors import ConfigError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RESNET_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class StrictSection:
    """Base of the config dataclasses: assigning a name that is not one of their keys raises.

    A plain dataclass takes ``cfg.training.batch_sise = 8`` and silently trains with the default, so a
    typo in a config file would go unnoticed; here it is a :class:`ConfigError` naming the key (and the
    closest real one).
    """

    _section: ClassVar[str] = ""
    # Attributes that are not config keys but may be set (links between sections).
    _internal: ClassVar[tuple[str, ...]] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        known = self.__dataclass_fields__  # type: ignore[attr-defined]
        if name not in known and name not in self._internal and not isinstance(getattr(type(self), name, None),
                                                                                property):
            raise ConfigError(unknown_key_message(self, name))
        object.__setattr__(self, name, value)


def unknown_key_message(section: Any, name: str) -> str:
    prefix = f"{section._section}." if section._section else ""
    keys = [f.name for f in dataclasses.fields(section)]
    keys += [k for k, v in vars(type(section)).items() if isinstance(v, property)]
    close = difflib.get_close_matches(name, keys, n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    what = "key" if prefix else "section"
    return f"config: unknown {what} '{prefix}{name}'{hint}"


@dataclass
class DataConfig(StrictSection):
    """Dataset and loader settings."""

    _section: ClassVar[str] = "data"
    input_dir: str | None = "./data/input"
    output_dir: str | None = "./data/output"
    # None: ``{input_dir}/render_metadata.json``.
    metadata_path: str | None = None
    # Spec: inputs and targets load at native 2048×2048; an image of another size is resized to this.
    image_size: int = 2048
    batch_size: int = 2
    num_workers: int = 4
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2
    # Legacy switch (True = dirty only); ``render_curriculum`` is the one read, see ``curriculum_mode``.
    use_dirty_renders: bool = False
    # 0 = clean only, 1 = every clean and every dirty render on disk, 2 = dirty only.
    render_curriculum: int = 0
    val_ratio: float = 0.1
    # ``--synthetic``: procedural materials rendered on the fly (see ``neuropbr.utils.synthetic``).
    synthetic: bool = False
    synthetic_num_samples: int = 16
    # Seed of the procedural materials (independent of training.seed, so teacher shards and the
    # student's synthetic loader see the same materials whatever their training seeds).
    synthetic_seed: int = 0
    # Size used by ``--synthetic`` unless ``--image-size`` is given: a CPU epoch takes seconds.
    synthetic_image_size: int = 64


@dataclass
class ModelConfig(StrictSection):
    """Generator and discriminator architecture."""

    _section: ClassVar[str] = "model"
    encoder_type: str = "resnet"  # resnet | unet
    encoder_backbone: str = "resnet50"  # resnet18 / 34 / 50 / 101 / 152
    encoder_in_channels: int = 3
    # Stride of the ResNet stem conv: 1 keeps a full-resolution first feature map, 2 is torchvision's.
    encoder_stride: int = 1
    encoder_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    # Local file with torchvision ResNet weights; None = random initialisation (no downloads).
    pretrained_path: str | None = None
    freeze_backbone: bool = False
    freeze_bn: bool = False

    use_transformer: bool = True
    transformer_dim: int = 2048
    transformer_num_heads: int = 32
    transformer_depth: int = 4
    transformer_mlp_ratio: int = 4
    transformer_proj_drop: float = 0.1
    transformer_attn_drop: float = 0.1

    # Channels of the decoder stages, deepest first (each stage doubles the resolution).
    decoder_channels: list[int] = field(default_factory=lambda: [512, 256, 128, 64, 32])
    output_channels: list[int] = field(default_factory=lambda: [3, 1, 1, 3])
    # A normal head of its own on the decoder output plus the full-resolution view features, predicting
    # the tilt (x, y) from flat, so that pixel-scale shading differences between the views reach the
    # normal without going through the stage the albedo shares. Off: short runs have not shown it helps
    # (README, "Recommended recipe on real materials (CPU)").
    normal_detail_head: bool = False
    # Photometric stereo inside the model (``neuropbr.utils.photometric``): the classical normal from the
    # three views and the renderer's known lights joins the full-resolution view features, and the normal
    # head predicts a per-pixel gate on its tilt plus a residual tilt (a gate near 0 falls back to flat).
    # Assumes each input covers the whole rendered plane (not tiles). Used by ``real_cpu``.
    photometric_input: bool = False
    # Activation checkpointing of the encoder, the fusion blocks, the decoder and the heads (the same
    # outputs and gradients, about a third more compute, a fraction of the memory). None = auto: on
    # for training steps of at least one 2048² sample's pixels per view (README, "Memory").
    activation_checkpointing: bool | None = None

    use_gan: bool = True
    discriminator_type: str = "configurable"  # configurable | simple (3 layers, 70×70)
    discriminator_in_channels: int = 8
    discriminator_ndf: int = 64
    discriminator_n_layers: int = 6
    discriminator_use_sigmoid: bool = False


@dataclass
class LossConfig(StrictSection):
    """Weights of the :class:`~neuropbr.losses.losses.HybridLoss` terms."""

    _section: ClassVar[str] = "loss"
    loss_type: str = "hybrid"
    w_l1: float = 1.0
    w_ssim: float = 0.3
    w_normal: float = 0.5
    w_gan: float = 0.05
    w_albedo: float = 1.0
    w_roughness: float = 1.0
    w_metallic: float = 1.0
    w_normal_map: float = 1.0
    gan_loss_type: str = "hinge"  # hinge | bce
    w_discriminator: float = 1.0


@dataclass
class OptimizerConfig(StrictSection):
    """Optimizers of G and D and the learning-rate schedule (stepped per epoch)."""

    _section: ClassVar[str] = "optimizer"
    g_optimizer: str = "adamw"  # adam | adamw | sgd
    g_lr: float = 2e-4
    g_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    g_weight_decay: float = 1e-4
    d_optimizer: str = "adam"
    d_lr: float = 2e-4
    d_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    d_weight_decay: float = 0.0
    scheduler: str = "cosine"  # cosine | step | plateau | none
    scheduler_warmup_epochs: int = 5
    scheduler_min_lr: float = 1e-6
    step_size: int = 30
    gamma: float = 0.1
    patience: int = 10
    factor: float = 0.5


@dataclass
class TrainingConfig(StrictSection):
    """Loop, precision, schedule, checkpoints and logging.

    ``batch_size`` is not a key of its own: it is ``data.batch_size`` under the name the spec's
    custom-config template uses (``cfg.training.batch_size = 8``), so either spelling sets the one value.
    """

    _section: ClassVar[str] = "training"
    _internal: ClassVar[tuple[str, ...]] = ("_data",)
    epochs: int = 100
    device: str = "auto"
    use_amp: bool = True
    # None: fp16 on CUDA when ``use_amp``, else fp32. Or fp32 | fp16 | bf16.
    precision: str | None = None
    grad_clip_norm: float | None = 1.0
    gan_start_epoch: int = 5
    d_steps_per_g_step: int = 1
    val_every_n_epochs: int = 1
    val_batches: int | None = None
    save_every_n_epochs: int = 5
    save_best_only: bool = False
    # Periodic checkpoint files kept (0 keeps all).
    keep_last_n: int = 0
    checkpoint_dir: str = "./checkpoints"
    log_every_n_steps: int = 10
    log_images_every_n_epochs: int = 5
    use_tensorboard: bool = True
    use_wandb: bool = False
    wandb_project: str = "neuropbr"
    wandb_run_name: str | None = None
    # Tracker chosen explicitly (tensorboard | mlflow | wandb | none); None derives it from the flags above.
    tracker: str | None = None
    # torch.compile the generator (Linux + CUDA only; ignored elsewhere with a note).
    compile: bool = False
    seed: int = 42
    deterministic: bool = False


    @property
    def batch_size(self) -> int:
        return self._linked_data().batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._linked_data().batch_size = value

    def _linked_data(self) -> DataConfig:
        data = self.__dict__.get("_data")
        if data is None:
            raise ConfigError("config: training.batch_size is data.batch_size; set it on a whole TrainConfig")
        return data


@dataclass
class TransformConfig(StrictSection):
    """Input normalisation (targets are never normalised)."""

    _section: ClassVar[str] = "transform"
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    use_imagenet_stats: bool = False


@dataclass
class TrainConfig(StrictSection):
    """The whole configuration: ``data``, ``model``, ``loss``, ``optimizer``, ``training``, ``transform``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # training.batch_size reads and writes data.batch_size: keep the link when either is replaced.
        training, data = self.__dict__.get("training"), self.__dict__.get("data")
        if name in ("data", "training") and isinstance(training, TrainingConfig) and data is not None:
            object.__setattr__(training, "_data", data)

    def finalize(self) -> TrainConfig:
        """Resolve derived values and validate; call after every override."""
        if self.transform.use_imagenet_stats:
            self.transform.mean = list(IMAGENET_MEAN)
            self.transform.std = list(IMAGENET_STD)
        if self.data.use_dirty_renders and self.data.render_curriculum == 0:
            self.data.render_curriculum = 2
        validate(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are a :class:`ConfigError`."""
        cfg = cls()
        for section, values in data.items():
            if not hasattr(cfg, section) or not dataclasses.is_dataclass(getattr(cfg, section)):
                raise ConfigError(f"config: unknown section '{section}'")
            target = getattr(cfg, section)
            known = {f.name for f in dataclasses.fields(target)}
            for key, value in dict(values).items():
                if key not in known:
                    raise ConfigError(f"config: unknown key '{section}.{key}'")
                setattr(target, key, list(value) if isinstance(value, tuple) else value)
        return cfg

    @property
    def metadata_path(self) -> str | None:
        if self.data.metadata_path:
            return self.data.metadata_path
        return str(Path(self.data.input_dir) / "render_metadata.json") if self.data.input_dir else None


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid key."""
    m, d, t, o, loss = cfg.model, cfg.data, cfg.training, cfg.optimizer, cfg.loss
    checks: list[tuple[bool, str]] = [
        (m.encoder_type in ("resnet", "unet"), f"model.encoder_type must be resnet or unet, got {m.encoder_type!r}"),
        (m.encoder_type != "resnet" or m.encoder_backbone in RESNET_BACKBONES,
         f"model.encoder_backbone must be one of {', '.join(RESNET_BACKBONES)}, got {m.encoder_backbone!r}"),
        (m.encoder_stride in (1, 2), f"model.encoder_stride must be 1 or 2, got {m.encoder_stride!r}"),
        (len(m.encoder_channels) >= 2, "model.encoder_channels needs at least two stages"),
        (m.transformer_dim > 0 and m.transformer_num_heads > 0 and m.transformer_dim % m.transformer_num_heads == 0,
         f"model.transformer_dim ({m.transformer_dim}) must be a positive multiple of "
         f"model.transformer_num_heads ({m.transformer_num_heads})"),
        (m.transformer_depth >= 0, "model.transformer_depth must be >= 0"),
        (not m.photometric_input or m.encoder_in_channels == 3,
         "model.photometric_input needs RGB views (model.encoder_in_channels 3)"),
        (list(m.output_channels) == [3, 1, 1, 3], "model.output_channels must be [3, 1, 1, 3] (albedo, roughness, metallic, normal)"),
        (m.discriminator_type in ("configurable", "simple"),
         f"model.discriminator_type must be configurable or simple, got {m.discriminator_type!r}"),
        (m.discriminator_n_layers >= 1, "model.discriminator_n_layers must be >= 1"),
        (d.render_curriculum in (0, 1, 2), f"data.render_curriculum must be 0, 1 or 2, got {d.render_curriculum!r}"),
        (0.0 <= d.val_ratio < 1.0, f"data.val_ratio must be in [0, 1), got {d.val_ratio}"),
        (d.image_size >= 16, f"data.image_size must be >= 16, got {d.image_size}"),
        (d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}"),
        (t.epochs >= 1, f"training.epochs must be >= 1, got {t.epochs}"),
        (t.d_steps_per_g_step >= 1, "training.d_steps_per_g_step must be >= 1"),
        (t.precision in (None, "fp32", "fp16", "bf16"), f"training.precision must be fp32, fp16 or bf16, got {t.precision!r}"),
        (o.scheduler in ("cosine", "step", "plateau", "none", None),
         f"optimizer.scheduler must be cosine, step, plateau or none, got {o.scheduler!r}"),
        (o.g_optimizer in ("adam", "adamw", "sgd"), f"optimizer.g_optimizer must be adam, adamw or sgd, got {o.g_optimizer!r}"),
        (o.d_optimizer in ("adam", "adamw", "sgd"), f"optimizer.d_optimizer must be adam, adamw or sgd, got {o.d_optimizer!r}"),
        (loss.gan_loss_type in ("hinge", "bce"), f"loss.gan_loss_type must be hinge or bce, got {loss.gan_loss_type!r}"),
        (len(cfg.transform.mean) == 3 and len(cfg.transform.std) == 3 and all(s > 0 for s in cfg.transform.std),
         "transform.mean and transform.std need three values, std > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def get_default_config() -> TrainConfig:
    """Production: ResNet50 encoder, ViT depth 4, GAN from epoch 5."""
    return TrainConfig()


def get_quick_test_config() -> TrainConfig:
    """Debug / smoke tests: ResNet18, ViT depth 2, 20 epochs, small fusion width."""
    cfg = TrainConfig()
    cfg.model.encoder_backbone = "resnet18"
    cfg.model.encoder_stride = 2
    cfg.model.transformer_dim = 256
    cfg.model.transformer_num_heads = 8
    cfg.model.transformer_depth = 2
    cfg.model.decoder_channels = [256, 128, 64, 32, 16]
    cfg.model.discriminator_n_layers = 3
    cfg.model.discriminator_ndf = 32
    cfg.training.epochs = 20
    cfg.training.gan_start_epoch = 1
    cfg.training.save_every_n_epochs = 1
    cfg.training.log_images_every_n_epochs = 1
    cfg.data.batch_size = 2
    cfg.optimizer.scheduler_warmup_epochs = 2
    return cfg


def get_lightweight_config() -> TrainConfig:
    """Fast baseline: ResNet50, no GAN, heavier SSIM/normal terms."""
    cfg = TrainConfig()
    cfg.model.use_gan = False
    cfg.loss.w_gan = 0.0
    cfg.loss.w_l1 = 1.0
    cfg.loss.w_ssim = 0.5
    cfg.loss.w_normal = 0.7
    return cfg


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "default": get_default_config,
    "quick_test": get_quick_test_config,
    "lightweight": get_lightweight_config,
}


def _package_config_dir() -> Path:
    return Path(__file__).resolve().parent / "configs"


def load_config(name_or_path: str | None) -> TrainConfig:
    """A preset (``default``, ``quick_test``, ``lightweight``, ``high_quality``, ``fast_iteration``,
    ``normal_focused``) or a Python file defining ``get_config() -> TrainConfig``."""
    if not name_or_path:
        return get_default_config()
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]()
    path = Path(name_or_path)
    if not path.suffix and (_package_config_dir() / f"{name_or_path}.py").is_file():
        path = _package_config_dir() / f"{name_or_path}.py"
    elif not path.is_file() and (_package_config_dir() / path.name).is_file() and path.suffix == ".py":
        # ``configs/high_quality.py`` from any folder: the copy inside the package.
        path = _package_config_dir() / path.name
    if not path.is_file():
        raise ConfigError(
            f"{name_or_path}: config not found (presets: {', '.join(list(PRESETS) + builtin_config_files())}; "
            "or a .py file defining get_config())"
        )
    return _load_config_file(path)


def builtin_config_files() -> list[str]:
    return sorted(p.stem for p in _package_config_dir().glob("*.py")
                  if p.stem != "__init__" and not p.stem.startswith("student"))


def _load_config_file(path: Path) -> TrainConfig:
    module_name = f"_neuropbr_config_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    # ``from train_config import TrainConfig`` (the spec's template) must work in user config files.
    sys.modules.setdefault("train_config", sys.modules[__name__])
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file: any failure is a config error, named in one line
        raise ConfigError(f"{path}: failed to load config file: {type(exc).__name__}: {exc}") from None
    getter = getattr(module, "get_config", None)
    if getter is None:
        raise ConfigError(f"{path}: config file defines no get_config()")
    try:
        cfg = getter()
    except Exception as exc:
        raise ConfigError(f"{path}: get_config() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(cfg, TrainConfig):
        if dataclasses.is_dataclass(cfg) and type(cfg).__name__ == "TrainConfig":
            cfg = TrainConfig.from_dict(dataclasses.asdict(cfg))
        elif isinstance(cfg, Mapping):
            cfg = TrainConfig.from_dict(cfg)
        else:
            raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, expected TrainConfig")
    return cfg
