"""Shared fixtures of the neuropbr tests (tiny sizes, CPU only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "pbr"


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores shared with other suites: oversubscribed intra-op threads only slow everything down.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_tiny_config(**model_overrides):
    """A generator small enough for CPU tests (ResNet18 stem stride 2, 64-d fusion)."""
    from neuropbr.train_config import get_quick_test_config

    cfg = get_quick_test_config()
    cfg.model.transformer_dim = 64
    cfg.model.transformer_num_heads = 4
    cfg.model.transformer_depth = 1
    cfg.model.decoder_channels = [64, 32, 32, 16, 16]
    cfg.model.discriminator_ndf = 8
    cfg.model.discriminator_n_layers = 2
    for key, value in model_overrides.items():
        setattr(cfg.model, key, value)
    return cfg.finalize()


@pytest.fixture
def tiny_config():
    """Factory: ``tiny_config(**model_overrides) -> TrainConfig``."""
    return make_tiny_config


@pytest.fixture
def real_materials() -> list[Path]:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real PBR sample data not found at {DATA_DIR} (it sits beside the repository in CI)")
    mats = sorted(p for p in DATA_DIR.iterdir() if p.is_dir() and (p / "albedo.png").is_file())
    if not mats:
        pytest.skip(f"no material folders in {DATA_DIR}")
    return mats
