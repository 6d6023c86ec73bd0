"""Seeding, determinism, and capture/restore of every RNG stream for exact resume."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks torch for deterministic kernels (warning, not failing, where an
    op has none) and turns cuDNN autotuning off: on CPU this makes runs bit-exact; on CUDA it removes
    the nondeterminism torch can remove, at some speed cost.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # seeds every CUDA device too
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for a DataLoader or sampler, so data order depends on the seed alone."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: per-worker NumPy/Python seeds; stop signals left to the main process.

    torch seeds each worker's torch RNG from the loader's generator, but NumPy and ``random`` would
    otherwise start identical in every worker and repeat the same augmentations.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    # SLURM, `timeout` and container runtimes signal the whole process group. A worker killed by that
    # SIGTERM makes the main process raise "DataLoader worker ... killed" before it can save its
    # preemption checkpoint; the main process decides, and ends its workers itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state as plain data (tensors, lists, ints) that loads with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the streams captured by :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
