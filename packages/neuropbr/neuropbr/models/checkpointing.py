"""Activation checkpointing of model segments (``torch.utils.checkpoint``, non-reentrant).

A checkpointed segment keeps only its inputs during the forward pass and runs again during backward
to rebuild what its backward needs. Outputs and gradients are those of the plain forward: dropout
replays its random numbers (the RNG state is restored for the rerun), and BatchNorm layers in training
mode do not fold the rerun's batch statistics into their running averages a second time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def _running_stats_frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    # Momentum 0 leaves running_mean/var exactly as they are (r·1 + m·0); the counter is put back.
    saved = []
    for m in modules:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            count = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
            saved.append((m, m.momentum, count))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def run_segment(fn: Callable[..., Any], *args: Any, enabled: bool, modules: Iterable[nn.Module] | None = None) -> Any:
    """``fn(*args)``, checkpointed when ``enabled`` and autograd is recording.

    ``modules``: the modules ``fn`` runs (default: ``fn`` itself when it is a module), whose BatchNorm
    running statistics the rerun must leave alone.
    """
    if not enabled or not torch.is_grad_enabled():
        return fn(*args)
    mods = list(modules) if modules is not None else ([fn] if isinstance(fn, nn.Module) else [])

    def contexts():
        return contextlib.nullcontext(), _running_stats_frozen(m for mod in mods for m in mod.modules())

    return checkpoint(fn, *args, use_reentrant=False, context_fn=contexts)
