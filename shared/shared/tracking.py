"""One small interface over TensorBoard, MLflow and Weights & Biases (or nothing).

Each backend is the real library, imported only when chosen. Only the main process gets a writing
tracker; other ranks get :class:`NoTracker`, so calls need no ``if rank == 0`` guards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.distributed import is_main_process
from shared.errors import ConfigError
from shared.images import to_numpy_image

TRACKERS: tuple[str, ...] = ("tensorboard", "mlflow", "wandb", "none")


def _plain(value: Any) -> Any:
    """Params as strings/numbers: trackers reject paths, tuples of paths, dataclass fields..."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return str([_plain(v) for v in value])
    return str(value)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = _plain(value)
    return flat


class Tracker:
    """Interface: ``log_params``, ``log_metrics``, ``log_image``, ``finish``. ``run`` is the raw handle."""

    backend = "none"
    run: Any = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_image(self, name: str, image: np.ndarray | torch.Tensor, step: int) -> None: ...

    def finish(self) -> None: ...

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.finish()


class NoTracker(Tracker):
    """Logs nothing (``--tracker none``, and every rank but the main one)."""


class TensorBoardTracker(Tracker):
    backend = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.run = SummaryWriter(log_dir=str(log_dir))

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = _flatten(params)
        self.run.add_text("params", "\n".join(f"    {k}: {v}" for k, v in sorted(flat.items())), 0)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.run.add_scalar(key, float(value), step)

    def log_image(self, name: str, image, step: int) -> None:
        self.run.add_image(name, to_numpy_image(image), step, dataformats="HWC" if _ndim(image) == 3 else "HW")

    def finish(self) -> None:
        self.run.flush()
        self.run.close()


class MLflowTracker(Tracker):
    backend = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str, run_name: str | None) -> None:
        import mlflow

        self._mlflow = mlflow
        if tracking_uri.startswith("file:"):
            # MLflow 3 keeps the local mlruns/ file store behind this switch; the specs ask for it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._mlflow.log_params({k: ("" if v is None else v) for k, v in _flatten(params).items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, name: str, image, step: int) -> None:
        self._mlflow.log_image(to_numpy_image(image), key=name.replace("/", "_"), step=step)

    def finish(self) -> None:
        self._mlflow.end_run()


class WandbTracker(Tracker):
    backend = "wandb"

    def __init__(self, run_dir: Path, project: str, run_name: str | None, entity: str | None,
                 config: Mapping[str, Any] | None) -> None:
        import wandb

        self._wandb = wandb
        # No API key in an unattended run means offline, not a prompt that waits for ever.
        mode = os.environ.get("WANDB_MODE")
        if mode is None and not os.environ.get("WANDB_API_KEY"):
            mode = "offline"
        self.run = wandb.init(project=project, name=run_name, entity=entity, dir=str(run_dir), mode=mode,
                              config=_flatten(config) if config else None, reinit="finish_previous")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(_flatten(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, name: str, image, step: int) -> None:
        self.run.log({name: self._wandb.Image(to_numpy_image(image))}, step=step)

    def finish(self) -> None:
        self.run.finish()


def _ndim(image) -> int:
    return to_numpy_image(image).ndim


def create_tracker(
    backend: str,
    run_dir: str | os.PathLike,
    project: str = "default",
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    entity: str | None = None,
) -> Tracker:
    """Open a tracker on the main process (``NoTracker`` elsewhere).

    Args:
        backend: ``tensorboard`` (events in ``run_dir``), ``mlflow`` (store at ``tracking_uri``, else
            ``$MLFLOW_TRACKING_URI``, else ``run_dir/mlruns``), ``wandb`` (files under ``run_dir/wandb``;
            ``WANDB_MODE`` honoured, offline when no API key is set) or ``none``.
        run_dir: where the backend writes.
        project: TensorBoard ignores it; the MLflow experiment; the W&B project.
        run_name: optional run name.
        config: logged as params.
    """
    if backend not in TRACKERS:
        raise ConfigError(f"unknown tracker '{backend}'; choose one of {', '.join(TRACKERS)}")
    if backend == "none" or not is_main_process():
        return NoTracker()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if backend == "tensorboard":
        tracker: Tracker = TensorBoardTracker(run_dir)
        if config:
            tracker.log_params(config)
    elif backend == "mlflow":
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        tracker = MLflowTracker(uri, project, run_name)
        if config:
            tracker.log_params(config)
    else:
        tracker = WandbTracker(run_dir, project, run_name, entity, config)
    return tracker
