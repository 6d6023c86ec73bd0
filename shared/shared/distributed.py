"""DDP under ``torchrun`` (one node or many), a single plain process without it.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every
process, whether it was started with ``--nproc_per_node`` alone or with ``--nnodes N --rdzv-endpoint
host:port``; :func:`init_distributed` reads only those, so multi-node needs no code change.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Sized
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

DEFAULT_TIMEOUT_MINUTES = 30.0

_timeout = datetime.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(
    backend: str = "auto",
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES,
    device: str | torch.device | None = None,
) -> DistInfo:
    """Join the process group when launched by ``torchrun``; otherwise do nothing.

    ``backend="auto"`` picks ``nccl`` for a CUDA ``device`` and ``gloo`` for any other; without a
    ``device`` (or with ``"auto"``), ``nccl`` when CUDA is available and ``gloo`` otherwise. Pass the
    run's ``--device``: ``--device cpu`` on a GPU machine needs gloo, since NCCL cannot reduce CPU
    tensors. The timeout bounds every collective: a rank that dies makes the others fail with an error
    after at most this long instead of hanging for ever.
    """
    global _timeout
    _timeout = datetime.timedelta(minutes=timeout_minutes)
    if not launched_by_torchrun():
        return DistInfo()
    world_size = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if _wants_cuda(device) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        # Surface NCCL failures as exceptions (then the timeout applies) instead of silent hangs.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_timeout, world_size=world_size, rank=rank)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, backend=backend)


def _wants_cuda(device: str | torch.device | None) -> bool:
    kind = str(device).strip().lower().split(":", 1)[0] if device is not None else "auto"
    if kind == "auto":
        return torch.cuda.is_available()
    return kind == "cuda"


def cleanup_distributed() -> None:
    """Leave the process group; safe to call when none was joined (use in ``finally``)."""
    if dist.is_available() and dist.is_initialized():
        # Shutdown after a failure must not mask the original error.
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes files and logs."""
    return get_rank() == 0


def collective_device() -> torch.device:
    """Tensors passed to collectives must live where the backend expects them."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op in a single process), bounded by the group's timeout."""
    if is_distributed():
        work = dist.barrier(async_op=True)
        work.wait(timeout=_timeout)


def all_reduce_mean(value: torch.Tensor | float, timeout: datetime.timedelta | None = None):
    """Mean of ``value`` over all ranks; returns the same kind (tensor or float) it was given.

    Runs asynchronously and waits at most ``timeout`` (default: the group's), so a dead rank raises
    ``RuntimeError`` here rather than blocking the survivors for ever.
    """
    as_float = not isinstance(value, torch.Tensor)
    if not is_distributed():
        return float(value) if as_float else value
    tensor = torch.tensor([float(value)], dtype=torch.float64) if as_float else value.detach().clone()
    original_device = tensor.device
    tensor = tensor.to(collective_device())
    work = dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True)
    if not work.wait(timeout=timeout or _timeout):
        raise RuntimeError(f"all_reduce_mean timed out after {timeout or _timeout}: a rank is not responding")
    tensor = tensor / dist.get_world_size()
    return float(tensor.item()) if as_float else tensor.to(original_device)


def make_sampler(dataset: Dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
    """A :class:`DistributedSampler` under DDP, ``None`` in a single process.

    With ``None`` the caller shuffles through the DataLoader (give it a seeded generator).
    Remember :func:`set_sampler_epoch` every epoch, or every epoch sees the same order.
    """
    if not is_distributed():
        return None
    assert isinstance(dataset, Sized)
    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


def set_sampler_epoch(sampler, epoch: int) -> None:
    """Reshuffle a sampler that supports it for ``epoch`` (safe to call with ``None``)."""
    if sampler is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """Wrap in DDP when distributed, otherwise return the model unchanged."""
    if not is_distributed():
        return model
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index], output_device=device.index,
            find_unused_parameters=find_unused_parameters,
        )
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or ``torch.compile`` wrappers (what checkpoints store)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
