"""The run scaffold: what every training loop does around its task, written once.

A trainer keeps its data, models, losses, the step and what it logs. :class:`TrainingRun` owns the rest
of a run's life:

* the run folder — a new run refuses a folder that holds another run's checkpoints unless the user
  says ``--resume`` or ``--overwrite`` (one line naming the folder);
* ``--resume PATH`` or ``--resume auto`` (``latest.pth`` in the folder if there is one, else its newest
  periodic checkpoint, a fresh start if neither: what a ``torchrun --max-restarts`` job, a SLURM requeue or a spot instance needs);
* the checkpoint cadence through :class:`~shared.checkpoint.CheckpointManager`, finite-state checks
  before each save, the last good state on divergence;
* stopping: SIGTERM/SIGINT, a wall-time budget or a step budget, checked after each step, agreed by
  every DDP rank, saved mid-epoch so that the resumed run continues on the exact next batch;
* the tracker's life: its run id goes into every checkpoint, a resumed run continues the same MLflow /
  W&B run, and the run is marked finished, killed (preempted) or failed by how the process ended.

Use::

    run = TrainingRun(KIND, manager, resume=args.resume, overwrite=args.overwrite,
                      budget=Budget(args.max_minutes))
    info = run.restore(objects) if run.resuming else None       # weights, optimizers, RNG, tracker id
    tracker = run.open_tracker("mlflow", run_dir, project=..., config=...)
    with run:                                                    # signals; tracker closed with the outcome
        for epoch in range(start, epochs):
            for batch in loader:
                ...                                              # the task's step
                if run.should_stop(global_step):
                    return run.stop(run.state(...))              # mid-epoch save; exit status
            run.end_epoch(run.state(...), epoch + 1, metric)     # latest / best / periodic
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared import distributed
from shared.amp import NonFiniteError, diverged, ensure_finite
from shared.checkpoint import (
    CheckpointManager,
    ResumeInfo,
    Stateful,
    load_checkpoint,
    make_training_state,
    restore_training_state,
    save_checkpoint,
)
from shared.errors import ConfigError
from shared.preemption import EXIT_PREEMPTED, GracefulStop
from shared.tracking import NoTracker, Tracker, create_tracker, outcome_of

RESUME_AUTO = "auto"


@dataclass(frozen=True)
class Budget:
    """How much this process may train: wall-clock minutes and/or optimizer steps (``None``: no limit).

    A run that reaches its budget saves ``latest.pth`` where it is (mid-epoch if need be) and exits 0;
    ``--resume`` continues it.
    """

    max_minutes: float | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"--max-minutes must be > 0, got {self.max_minutes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")


def resolve_resume(resume: str | os.PathLike | None, latest: Path, others: Iterable[Path] = ()) -> Path | None:
    """The checkpoint to resume from.

    ``auto`` means ``latest`` if it exists, else the newest of ``others`` (the periodic files: a folder
    whose ``latest`` was removed still holds the run), else a fresh start. Every file here was written
    atomically, so whichever exists is complete.
    """
    if resume is None or str(resume) == "":
        return None
    if str(resume) == RESUME_AUTO:
        if latest.is_file():
            return latest
        found = [path for path in others if path.is_file()]
        return max(found, key=lambda path: (path.stat().st_mtime, path.name)) if found else None
    return Path(resume)


def check_run_folder(manager: CheckpointManager, *, overwrite: bool, folder_flag: str = "--checkpoint-dir",
                     extra_files: tuple[str, ...] = ()) -> None:
    """Refuse to start a new run in a folder that holds another run, unless ``overwrite``.

    Another run is its ``latest``/``best`` checkpoint, a periodic checkpoint, or one of ``extra_files``
    (e.g. a ``metrics.jsonl`` it appends to). Nothing is deleted either way: ``--overwrite`` lets the new
    run replace those files as it writes its own, and pruning never touches another run's files.
    """
    if overwrite:
        return
    folder = manager.directory
    found = [p for p in (manager.latest_path, manager.best_path, *(folder / n for n in extra_files)) if p.exists()]
    found += sorted(p for p in folder.glob("checkpoint_*.p*") if p.is_file())
    if found:
        raise ConfigError(
            f"{folder}: holds another run ({found[0].name}); continue it with --resume {manager.latest_path} "
            f"(or --resume auto), start over with --overwrite, or choose another {folder_flag}")


class RunningMeans:
    """Means of a step's logged values over the steps that went through, reduced across DDP ranks.

    A skipped (non-finite) step must neither add its loss nor count: ``add`` only what stepped.
    """

    def __init__(self, sums: Mapping[str, float] | None = None, count: int = 0) -> None:
        self.sums: dict[str, float] = dict(sums or {})
        self.count = count

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def local(self) -> dict[str, float]:
        """This rank's means (for a progress bar)."""
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def reduced(self) -> dict[str, float]:
        """Means over every rank's steps (every rank must call this at the same point)."""
        total = distributed.all_reduce_mean(float(self.count)) * distributed.get_world_size()
        if total == 0:
            return {}
        world = distributed.get_world_size()
        return {k: distributed.all_reduce_mean(v) * world / total for k, v in sorted(self.sums.items())}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums, self.count = dict(state.get("sums", {})), int(state.get("count", 0))


def validation_metrics(model: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]],
                       prefix: str = "val/") -> dict[str, float]:
    """The tracker's names for a validation: ``val/psnr`` for the model, ``val/psnr_input`` beside it.

    ``baselines`` maps a baseline's name (``"input"``: doing nothing) to its values of the same
    metrics, so that every chart and console line shows whether the model beats it.
    """
    logged = {f"{prefix}{name}": float(value) for name, value in model.items()}
    for baseline, values in baselines.items():
        logged.update({f"{prefix}{name}_{baseline}": float(value) for name, value in values.items()})
    return logged


def validation_line(model: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]]) -> str:
    """``val psnr 27.41 (input 26.95) ssim 0.8123 (input 0.8011)``: each metric beside its baselines'."""
    parts = []
    for name, value in model.items():
        beside = [f"{baseline} {_fmt(values[name])}" for baseline, values in baselines.items() if name in values]
        parts.append(f"{name} {_fmt(value)}" + (f" ({', '.join(beside)})" if beside else ""))
    return "val " + " ".join(parts)


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


class TrainingRun:
    """One training run's folder, resume, stops, saves and tracker (see the module docstring).

    Args:
        kind: what trains (``"deblur_unet"``); a resumed checkpoint must carry the same.
        manager: where and how checkpoints are written.
        resume: a checkpoint path, ``"auto"``, or ``None``.
        overwrite: allow a new run in a folder that holds another.
        budget: wall-time / step limits of this process.
        folder_flag: the trainer's flag for the folder, named in the refusal.
        extra_files: files besides checkpoints that mark a folder as holding a run.
    """

    def __init__(self, kind: str, manager: CheckpointManager, *, resume: str | os.PathLike | None = None,
                 overwrite: bool = False, budget: Budget = Budget(), folder_flag: str = "--checkpoint-dir",
                 extra_files: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.manager = manager
        self.budget = budget
        self.requested_resume = None if resume is None else str(resume)
        self.resume_path = resolve_resume(resume, manager.latest_path,
                                          manager.directory.glob("checkpoint_epoch_*.pth"))
        if self.resume_path is None:
            check_run_folder(manager, overwrite=overwrite, folder_flag=folder_flag, extra_files=extra_files)
        self.checkpoint: dict[str, Any] | None = (
            load_checkpoint(self.resume_path) if self.resume_path is not None else None)
        self.tracker: Tracker = NoTracker()
        self.stop_reason: str | None = None
        self._signals = GracefulStop()
        self._started = time.monotonic()
        # Trainers may build the run before the process group: torchrun's RANK says who speaks then.
        if self.requested_resume == RESUME_AUTO and distributed.is_main_process() and os.environ.get("RANK", "0") == "0":
            found = f"resuming {self.resume_path}" if self.resume_path else f"no {manager.latest_path}, starting fresh"
            print(f"--resume auto: {found}", file=sys.stderr)

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None

    # ------------------------------------------------------------------ resume
    def restore(self, objects: Mapping[str, Stateful | None], restore_rng: bool = True) -> ResumeInfo:
        """Load the resumed checkpoint into ``objects``, the manager's bookkeeping and the RNG streams."""
        if self.checkpoint is None:
            raise RuntimeError("restore() needs a run started with --resume")
        info = restore_training_state(self.checkpoint, objects, kind=self.kind, source=self.resume_path,
                                      restore_rng=restore_rng)
        self.manager.load_state_dict(self.checkpoint.get("checkpoints", {}))
        self.manager.best_metric = info.best_metric
        return info

    # ------------------------------------------------------------------ tracker
    def open_tracker(self, backend: str, run_dir: str | os.PathLike, **kwargs: Any) -> Tracker:
        """:func:`~shared.tracking.create_tracker`, continuing the resumed run's tracker run if it had one."""
        saved = (self.checkpoint or {}).get("tracker") or {}
        resume_id = saved.get("run_id") if saved.get("backend") == backend else None
        self.tracker = create_tracker(backend, run_dir, resume_id=resume_id, **kwargs)
        return self.tracker

    def log_validation(self, model: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]],
                       global_step: int, prefix: str = "val/") -> str:
        """Log the model's validation metrics and its baselines' at ``global_step``; return the console line."""
        self.tracker.log_metrics(validation_metrics(model, baselines, prefix), step=global_step)
        return validation_line(model, baselines)

    # ------------------------------------------------------------------ state
    def state(self, *, epoch: int, global_step: int, objects: Mapping[str, Stateful | None],
              config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """:func:`~shared.checkpoint.make_training_state` plus the tracker's run and the manager's files."""
        state = make_training_state(kind=self.kind, epoch=epoch, global_step=global_step, objects=objects,
                                    best_metric=self.manager.best_metric, config=config, extra=extra)
        state["tracker"] = {"backend": self.tracker.backend, "run_id": self.tracker.run_id}
        return self.manager.stamp(state)

    # ------------------------------------------------------------------ stopping
    def __enter__(self) -> TrainingRun:
        self._signals.__enter__()
        self._started = time.monotonic()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._signals.__exit__(exc_type, exc, tb)
        # A loop may return stop()'s status instead of raising it: a signalled stop is a kill either way.
        self.tracker.finish("killed" if exc is None and self.stop_reason == "signal" else outcome_of(exc))

    def elapsed_minutes(self) -> float:
        return (time.monotonic() - self._started) / 60

    def should_stop(self, global_step: int) -> bool:
        """After a step: has a signal or the budget asked this run (any rank of it) to stop?

        One collective under DDP (every rank must call this after the same step), so all ranks leave the
        loop together; :attr:`stop_reason` then says why.
        """
        reason = self._local_reason(global_step)
        flag = 2 if reason == "signal" else 1 if reason else 0
        if distributed.is_distributed():
            value = torch.tensor([float(flag)], device=distributed.collective_device())
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            flag = int(value.item())
        if flag:
            self.stop_reason = "signal" if flag == 2 else reason or "budget"
        return bool(flag)

    def _local_reason(self, global_step: int) -> str | None:
        if self._signals.requested:
            return "signal"
        b = self.budget
        if b.max_steps is not None and global_step >= b.max_steps:
            return f"step budget ({b.max_steps} steps)"
        if b.max_minutes is not None and self.elapsed_minutes() >= b.max_minutes:
            return f"time budget ({b.max_minutes:g} min)"
        return None

    def stop(self, state: Mapping[str, Any], where: str = "") -> int:
        """Save ``state`` (this epoch's position inside it) to ``latest.pth``; return the exit status.

        ``EXIT_PREEMPTED`` after a signal (resume me), 0 after a budget. Rank 0 writes; the others wait,
        since one leaving first would make ``torchrun`` kill the writer.
        """
        path = self.manager.latest_path
        if distributed.is_main_process():
            save_checkpoint(path, self.manager.stamp(state))
            why = self._signals.signal_name if self.stop_reason == "signal" else self.stop_reason
            print(f"stopped by {why or 'request'}{' ' + where if where else ''}: saved {path}; "
                  f"continue with --resume {path}", file=sys.stderr)
        distributed.barrier()
        return EXIT_PREEMPTED if self.stop_reason == "signal" else 0

    def stop_and_exit(self, state: Mapping[str, Any], where: str = "") -> None:
        """:meth:`stop`, then leave with its status (``SystemExit``; 0 leaves quietly too)."""
        raise SystemExit(self.stop(state, where))

    def diverged(self, error: NonFiniteError, state: Mapping[str, Any]) -> NonFiniteError:
        """Save the last good ``state`` to ``latest.pth`` (if finite) and return the error to raise."""
        return diverged(error, self.manager.stamp(state), self.manager.latest_path)

    def end_epoch(self, state: Mapping[str, Any], epoch: int, metric: float | None = None) -> list[Path]:
        """Check ``state`` is finite everywhere, then write latest / best / periodic for ``epoch`` done."""
        ensure_finite(state, f"the end of epoch {epoch}", self.manager.latest_path)
        if metric is not None and not math.isfinite(metric):
            metric = None
        written = self.manager.save(dict(state), epoch, metric)
        distributed.barrier()
        return written


def add_run_arguments(parser, *, folder_flag: str = "--checkpoint-dir", resume: bool = True) -> None:
    """The scaffold's flags: ``--resume PATH|auto`` (unless the trainer has its own), ``--overwrite``,
    ``--max-minutes``, ``--max-steps``."""
    if resume:
        parser.add_argument("--resume", default=None, metavar="PATH|auto",
                            help="continue from a checkpoint; 'auto': from latest.pth in the checkpoint folder "
                                 "if there is one, else start fresh (for restarted jobs)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"start a new run in a {folder_flag} that already holds one")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this many minutes of training, saving latest.pth (resume continues)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many optimizer steps in all, saving latest.pth")
