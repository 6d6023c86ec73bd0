"""Build the dataset a config asks for (real PNGs or ``--synthetic``) with the config's preprocessing."""

from __future__ import annotations

from torch.utils.data import Dataset

from neuropbr.train_config import TrainConfig
from neuropbr.utils.dataset import PBRDataset, resolve_curriculum
from neuropbr.utils.synthetic import SyntheticPBRDataset
from shared.errors import ConfigError


def input_size(cfg: TrainConfig) -> int:
    """Side the model's inputs are resized to: ``synthetic_image_size`` for synthetic runs, else ``image_size``."""
    return int(cfg.data.synthetic_image_size if cfg.data.synthetic else cfg.data.image_size)


def build_dataset(cfg: TrainConfig, output_size: int | None = None) -> Dataset:
    """The full dataset (before the train/val split) for ``cfg``.

    Both kinds yield ``(inputs (3, 3, S, S), targets (8, S', S'))`` with ``S = input_size(cfg)`` and
    ``S' = output_size or S``, and expose ``sample_key(i)``, ``group_keys``, ``load_raw(i)``.
    """
    mode = resolve_curriculum(cfg.data.use_dirty_renders, cfg.data.render_curriculum)
    if cfg.data.synthetic:
        return SyntheticPBRDataset(
            num_samples=cfg.data.synthetic_num_samples, image_size=input_size(cfg), seed=cfg.data.synthetic_seed,
            transform_mean=cfg.transform.mean, transform_std=cfg.transform.std, curriculum_mode=mode,
            output_size=output_size,
        )
    if not cfg.data.input_dir or not cfg.data.output_dir:
        raise ConfigError("no data: pass --input-dir and --output-dir (or --synthetic)")
    return PBRDataset(
        input_dir=cfg.data.input_dir, output_dir=cfg.data.output_dir, metadata_path=cfg.metadata_path,
        transform_mean=cfg.transform.mean, transform_std=cfg.transform.std, image_size=cfg.data.image_size,
        use_dirty=cfg.data.use_dirty_renders, curriculum_mode=mode, output_size=output_size,
    )
