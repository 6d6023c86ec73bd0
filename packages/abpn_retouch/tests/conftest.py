"""Shared fixtures for the abpn_retouch tests (tiny sizes, CPU only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "retouch"


def _run_script(script: str, *args: str, cwd: Path = PACKAGE_DIR, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def run_script():
    """Run an entry script of the package in a subprocess (cwd = the package folder)."""
    return _run_script


@pytest.fixture
def pair_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny synthetic portrait pairs written as PNG."""
    from abpn_retouch.data import synthetic_portrait

    original, retouch = tmp_path / "original", tmp_path / "retouch"
    original.mkdir()
    retouch.mkdir()
    for i, size in enumerate([(96, 128), (80, 80)]):
        src, dst = synthetic_portrait(i, *size)
        Image.fromarray(src).save(original / f"img_{i}.png")
        Image.fromarray(dst).save(retouch / f"img_{i}.png")
    return original, retouch


@pytest.fixture
def real_data() -> Path:
    if not (DATA_DIR / "original").is_dir():
        pytest.skip(f"real sample data not found at {DATA_DIR} (it sits beside the repository, not in it)")
    return DATA_DIR


def write_image(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def smooth_gradient(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A float ``(H, W, 3)`` image in 0..1 whose ramps span a few 8-bit levels and thousands of 16-bit ones:
    detail that only a 16-bit file holds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = yy / height, xx / width
    base = rng.uniform(0.2, 0.7, 3).astype(np.float32)
    return np.stack([base[0] + 0.02 * xn, base[1] + 0.015 * yn, base[2] + 0.01 * (xn + yn)], axis=-1)


@pytest.fixture
def gradient():
    """:func:`smooth_gradient`, for tests (conftest is no importable module under importlib import mode)."""
    return smooth_gradient
