"""Pick the compute device from a ``--device`` flag."""

from __future__ import annotations

import torch

from shared.errors import ConfigError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """The device kinds usable in this process, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    found.append("cpu")
    return found


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto | cuda | cuda:N | mps | cpu`` into a :class:`torch.device`.

    ``auto`` picks CUDA, then MPS, then CPU. Under ``torchrun`` a bare ``cuda`` means this process's
    GPU (``LOCAL_RANK``). Asking for a device that is not there raises :class:`ConfigError` naming
    what was asked and what exists, rather than silently falling back to a slower one.
    """
    import os

    name = name.strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device '{name}'; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "auto":
        kind = available_devices()[0]
        name = kind
    if kind == "cuda":
        if ":" in name and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # nccl binds each process to GPU LOCAL_RANK; a fixed index would put every rank on one GPU.
            raise ConfigError(
                f"device '{name}' pins every torchrun process to one GPU; use --device cuda (each process "
                "takes its LOCAL_RANK's GPU) and choose GPUs with CUDA_VISIBLE_DEVICES")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{name}' was requested but CUDA is not available; available: "
                f"{', '.join(available_devices())}"
            )
        if name == "cuda":
            index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
            return torch.device("cuda", index)
        index = int(name.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if kind == "mps" and not _mps_available():
        raise ConfigError(
            f"device 'mps' was requested but MPS is not available; available: {', '.join(available_devices())}"
        )
    return torch.device(kind)
