"""Atomic, weights-only checkpoints and the state that makes a resumed run exact.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) so it loads with
``torch.load(weights_only=True)``: opening a file from elsewhere can never run code.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from shared.distributed import is_main_process, unwrap_model
from shared.errors import UserError
from shared.files import atomic_write
from shared.seed import capture_rng_state, restore_rng_state

FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, unsafe, or does not fit what it is loaded into."""


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict, /) -> Any: ...


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically, readable under the process umask (:mod:`shared.files`)."""
    return atomic_write(path, lambda handle: torch.save(dict(state), handle))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; every failure is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes)")
    if not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; anything else is a truncated file or not a checkpoint at all,
        # which the unpickler would otherwise misreport as an unsafe object.
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): not a torch zip archive")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: it needs arbitrary Python objects, which weights-only loading "
            f"forbids ({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {first[:200]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(state).__name__}")
    return state


def make_training_state(
    *,
    kind: str,
    epoch: int,
    global_step: int,
    objects: Mapping[str, Stateful | None],
    best_metric: float | None = None,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a resumed run needs, as plain data.

    Args:
        kind: what trained this (e.g. ``"deblur_unet"``), checked on resume.
        epoch: epochs completed.
        global_step: optimizer steps completed.
        objects: named objects with ``state_dict()`` — model(s) (DDP/compile unwrapped here),
            optimizers, schedulers, :class:`~shared.amp.MixedPrecision`, samplers. ``None`` entries skip.
        best_metric: the monitored metric's best value so far.
        config: the run's config as a plain dict (``dataclasses.asdict``), never a pickled object.
        extra: anything else plain (e.g. early-stopping counters).
    """
    states = {}
    for name, obj in objects.items():
        if obj is None:
            continue
        if isinstance(obj, torch.nn.Module):
            obj = unwrap_model(obj)
        states[name] = obj.state_dict()
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "epoch": int(epoch),
        "global_step": int(global_step),
        "best_metric": None if best_metric is None else float(best_metric),
        "config": dict(config) if config is not None else {},
        "state": states,
        "rng": capture_rng_state(),
        "extra": dict(extra) if extra is not None else {},
    }


@dataclass(frozen=True)
class ResumeInfo:
    epoch: int
    global_step: int
    best_metric: float | None
    config: dict[str, Any]
    extra: dict[str, Any]


def restore_training_state(
    state: Mapping[str, Any],
    objects: Mapping[str, Stateful | None],
    *,
    kind: str,
    source: str | os.PathLike = "checkpoint",
    restore_rng: bool = True,
) -> ResumeInfo:
    """Load ``state`` (from :func:`make_training_state`) into ``objects`` and the RNG streams.

    Raises :class:`CheckpointError` saying what does not match: another package's checkpoint, a missing
    object, or model weights of another architecture (the first differing keys/shapes are named).
    """
    found_kind = state.get("kind")
    if found_kind != kind:
        raise CheckpointError(f"{source}: checkpoint was written by '{found_kind}', not '{kind}'")
    saved = state.get("state", {})
    for name, obj in objects.items():
        if obj is None:
            continue
        if name not in saved:
            raise CheckpointError(f"{source}: checkpoint has no '{name}' state (has: {', '.join(saved) or 'none'})")
        if isinstance(obj, torch.nn.Module):
            obj = unwrap_model(obj)
            _check_module_state(obj, saved[name], name, source)
        try:
            obj.load_state_dict(saved[name])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{source}: '{name}' state does not fit: {first[:300]}") from None
    if restore_rng and "rng" in state:
        restore_rng_state(state["rng"])
    return ResumeInfo(
        epoch=int(state.get("epoch", 0)),
        global_step=int(state.get("global_step", 0)),
        best_metric=state.get("best_metric"),
        config=dict(state.get("config", {})),
        extra=dict(state.get("extra", {})),
    )


def _check_module_state(module: torch.nn.Module, saved: Mapping[str, Any], name: str, source) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    mismatched = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:2])})")
    if problems:
        raise CheckpointError(f"{source}: '{name}' weights are from another architecture or config: "
                              + "; ".join(problems))


class CheckpointManager:
    """Writes ``latest.pth`` every epoch, ``best.pth`` on improvement, and periodic epoch files.

    Periodic files are ``checkpoint_epoch_NNNN.pth`` every ``save_every_n_epochs`` epochs. All of them
    are kept unless ``keep_last`` is positive; then only the newest ``keep_last`` *of this run* are.
    The manager remembers the periodic files it wrote (in every checkpoint it saves, under
    ``"checkpoints"``, so a resumed run remembers them too), and pruning deletes only those: an older
    run's files in the same folder are never touched. Only the main process writes.
    """

    PERIODIC = re.compile(r"checkpoint_epoch_(\d+)\.pth$")

    def __init__(
        self,
        directory: str | os.PathLike,
        save_every_n_epochs: int = 10,
        keep_last: int = 0,
        monitor: str = "val_loss",
        mode: Literal["min", "max"] = "min",
        best_metric: float | None = None,
        best_name: str = "best.pth",
        latest_name: str = "latest.pth",
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0 (0 keeps all), got {keep_last}")
        self.directory = Path(directory)
        self.save_every_n_epochs = save_every_n_epochs
        self.keep_last = keep_last
        self.monitor = monitor
        self.mode = mode
        self.best_metric = best_metric
        self.best_name = best_name
        self.latest_name = latest_name
        self.periodic_written: list[str] = []

    @property
    def latest_path(self) -> Path:
        return self.directory / self.latest_name

    @property
    def best_path(self) -> Path:
        return self.directory / self.best_name

    def periodic_path(self, epoch: int) -> Path:
        return self.directory / f"checkpoint_epoch_{epoch:04d}.pth"

    def is_better(self, metric: float | None) -> bool:
        if metric is None or not math.isfinite(metric):
            return False
        if self.best_metric is None:
            return True
        return metric < self.best_metric if self.mode == "min" else metric > self.best_metric

    def state_dict(self) -> dict[str, Any]:
        return {"periodic": list(self.periodic_written), "best_metric": self.best_metric}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.periodic_written = [str(name) for name in state.get("periodic", [])]
        if "best_metric" in state:
            self.best_metric = state["best_metric"]

    def save(self, state: dict[str, Any], epoch: int, metric: float | None = None) -> list[Path]:
        """Save for the end of ``epoch`` (1-based count of finished epochs); returns the files written.

        When ``metric`` improves, ``best_metric`` is updated *before* writing, so the saved state's
        ``best_metric`` is the value a resumed run must beat.
        """
        improved = self.is_better(metric)
        if improved:
            self.best_metric = float(metric)
        periodic = self.save_every_n_epochs > 0 and epoch % self.save_every_n_epochs == 0
        if periodic and self.periodic_path(epoch).name not in self.periodic_written:
            self.periodic_written.append(self.periodic_path(epoch).name)
        state = self.stamp(state)
        if not is_main_process():
            return []
        written = [save_checkpoint(self.latest_path, state)]
        if improved:
            written.append(save_checkpoint(self.best_path, state))
        if periodic:
            written.append(save_checkpoint(self.periodic_path(epoch), state))
            self._prune()
        return written

    def stamp(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """``state`` with this manager's bookkeeping (best metric, periodic files), as every save writes it."""
        state = dict(state)
        state["best_metric"] = self.best_metric
        state["checkpoints"] = self.state_dict()
        return state

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        ours = sorted(self.periodic_written, key=lambda name: int(self.PERIODIC.search(name).group(1)))
        for name in ours[: -self.keep_last]:
            (self.directory / name).unlink(missing_ok=True)
            self.periodic_written.remove(name)
