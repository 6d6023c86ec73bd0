"""One small interface over TensorBoard, MLflow and Weights & Biases (or nothing).

Each backend is the real library, imported only when chosen. Only the main process gets a writing
tracker; other ranks get :class:`NoTracker`, so calls need no ``if rank == 0`` guards.

A tracker lives as long as the *training*, not the process: :attr:`Tracker.run_id` goes into every
checkpoint (``shared.training`` does this), and a resumed run passes it back as ``resume_id`` so that
MLflow and W&B continue the same run instead of splitting one training's history across several.
:meth:`Tracker.finish` takes how the process ended, so a preempted run reads KILLED (MLflow) or
non-zero exit (W&B), not FINISHED.
"""

from __future__ import annotations

import json
import netrc
import os
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import torch

from shared.distributed import is_main_process
from shared.errors import ConfigError
from shared.images import to_numpy_image

TRACKERS: tuple[str, ...] = ("tensorboard", "mlflow", "wandb", "none")
Outcome = Literal["finished", "killed", "failed"]
# W&B charts every metric against this one (``define_metric``): W&B's own step must grow by one per
# ``log`` call, and drops any record whose step goes back, which epoch-numbered validation would do.
STEP_METRIC = "global_step"


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
    """Interface: ``log_params``, ``log_metrics``, ``log_image``, ``finish``. ``run`` is the raw handle.

    ``run_id`` names the backend's run (``None`` for TensorBoard and no tracker): store it and pass it
    back to :func:`create_tracker` to continue the run.
    """

    backend = "none"
    run: Any = None
    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_image(self, name: str, image: np.ndarray | torch.Tensor, step: int) -> None: ...

    def finish(self, outcome: Outcome = "finished") -> None: ...

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(outcome_of(exc))


def outcome_of(exc: BaseException | None) -> Outcome:
    """How a process that raised ``exc`` (``None``: returned normally) ended, in tracker terms."""
    if exc is None:
        return "finished"
    if isinstance(exc, SystemExit):
        from shared.preemption import EXIT_PREEMPTED

        code = exc.code
        if code in (None, 0):
            return "finished"
        return "killed" if code == EXIT_PREEMPTED else "failed"
    return "killed" if isinstance(exc, KeyboardInterrupt) else "failed"


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

    def finish(self, outcome: Outcome = "finished") -> None:
        self.run.flush()
        self.run.close()


class MLflowTracker(Tracker):
    backend = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str, run_name: str | None, resume_id: str | None = None,
                 artifact_location: str | None = None) -> None:
        import mlflow

        self._mlflow = mlflow
        if tracking_uri.startswith("file:"):
            # An explicit mlruns/ file store: MLflow 3 keeps it behind this switch.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None and artifact_location is not None:
            mlflow.create_experiment(experiment, artifact_location=artifact_location)
        mlflow.set_experiment(experiment)
        if resume_id is not None and not _mlflow_run_exists(mlflow, resume_id):
            print(f"note: MLflow run {resume_id} is not in {tracking_uri}; starting a new run", file=sys.stderr)
            resume_id = None
        self.run = mlflow.start_run(run_id=resume_id, run_name=None if resume_id else run_name)
        self.run_id = self.run.info.run_id
        self.tracking_uri = tracking_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: ("" if v is None else v) for k, v in _flatten(params).items()}
        if self.run.data.params:
            # A resumed run: MLflow refuses to change a logged param, so log only the new ones.
            flat = {k: v for k, v in flat.items() if k not in self.run.data.params}
        if flat:
            self._mlflow.log_params(flat)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, name: str, image, step: int) -> None:
        self._mlflow.log_image(to_numpy_image(image), key=name.replace("/", "_"), step=step)

    def finish(self, outcome: Outcome = "finished") -> None:
        self._mlflow.end_run(status=outcome.upper())


def _mlflow_run_exists(mlflow, run_id: str) -> bool:
    try:
        mlflow.get_run(run_id)
    except Exception:  # MlflowException for an unknown id; any store error means "not usable" here
        return False
    return True


def wandb_logged_in() -> bool:
    """Whether W&B has credentials: ``WANDB_API_KEY``, or the netrc entry ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    backend = "wandb"

    def __init__(self, run_dir: Path, project: str, run_name: str | None, entity: str | None,
                 config: Mapping[str, Any] | None, resume_id: str | None = None) -> None:
        import wandb

        self._wandb = wandb
        mode = os.environ.get("WANDB_MODE")
        if mode is None:
            # Never a login prompt that waits for ever in an unattended run: offline without credentials.
            mode = "online" if wandb_logged_in() else "offline"
            if mode == "offline":
                print(f"note: W&B is not logged in (no WANDB_API_KEY, no `wandb login`): logging offline to "
                      f"{run_dir / 'wandb'}; upload later with `wandb sync`", file=sys.stderr)
        self.run = wandb.init(project=project, name=run_name, entity=entity, dir=str(run_dir), mode=mode,
                              config=_flatten(config) if config else None, reinit="finish_previous",
                              id=resume_id, resume="allow" if resume_id else None)
        self.run_id = self.run.id
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(_flatten(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**{k: float(v) for k, v in metrics.items()}, STEP_METRIC: step})

    def log_image(self, name: str, image, step: int) -> None:
        self.run.log({name: self._wandb.Image(to_numpy_image(image)), STEP_METRIC: step})

    def finish(self, outcome: Outcome = "finished") -> None:
        self.run.finish(exit_code={"finished": 0, "killed": 75, "failed": 1}[outcome])


def _ndim(image) -> int:
    return to_numpy_image(image).ndim


def default_mlflow_uri(folder: str | os.PathLike) -> str:
    """``sqlite:///<folder>/mlflow.db``: a real database, which MLflow 3 serves and loads models from with
    no environment variable (its plain ``mlruns/`` file store needs ``MLFLOW_ALLOW_FILE_STORE``)."""
    return f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"


def create_tracker(
    backend: str,
    run_dir: str | os.PathLike,
    project: str = "default",
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    entity: str | None = None,
    resume_id: str | None = None,
    artifact_location: str | os.PathLike | None = None,
) -> Tracker:
    """Open a tracker on the main process (``NoTracker`` elsewhere).

    Args:
        backend: ``tensorboard`` (events in ``run_dir``), ``mlflow`` (store at ``tracking_uri``, else
            ``$MLFLOW_TRACKING_URI``, else ``sqlite:///run_dir/mlflow.db``), ``wandb`` (files under
            ``run_dir/wandb``; ``WANDB_MODE`` honoured, else online when logged in and offline — said
            once — when not) or ``none``.
        run_dir: where the backend writes.
        project: TensorBoard ignores it; the MLflow experiment; the W&B project.
        run_name: optional run name.
        config: logged as params.
        resume_id: a previous :attr:`Tracker.run_id` to continue (MLflow, W&B).
        artifact_location: MLflow only: the folder for a new experiment's artifacts (models, images).
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
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_mlflow_uri(run_dir)
        location = Path(artifact_location).resolve().as_uri() if artifact_location is not None else None
        tracker = MLflowTracker(uri, project, run_name, resume_id, location)
        if config:
            tracker.log_params(config)
    else:
        tracker = WandbTracker(run_dir, project, run_name, entity, config, resume_id)
    return tracker


@dataclass(frozen=True)
class OfflineRun:
    """An offline W&B run: ``history`` (one dict per log call), ``config``, its id and exit code
    (75 for a preempted run; ``None`` while it has not exited)."""

    history: list[dict[str, Any]]
    config: dict[str, Any]
    run_id: str | None
    exit_code: int | None


def read_offline_wandb(run_folder: str | os.PathLike, wait_seconds: float = 30.0) -> OfflineRun:
    """Read an offline W&B run folder (``wandb/offline-run-*``) without syncing it.

    What ``wandb sync`` would upload, for checking a run on a machine with no network. A ``.wandb`` file
    is a LevelDB-style log (32 KiB blocks) of wandb protobuf records; the framing is read here and every
    record decoded with wandb's own classes. wandb's core process may still be flushing when
    ``finish()`` returns, so this waits up to ``wait_seconds`` for the run's exit record.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = next(Path(run_folder).glob("run-*.wandb"))
    deadline = time.monotonic() + wait_seconds
    while True:
        records = _wandb_records(path.read_bytes(), pb.Record)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    config: dict[str, Any] = {}
    run_id = exit_code = None
    for r in records:
        if r.WhichOneof("record_type") == "run":
            run_id = r.run.run_id
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif r.WhichOneof("record_type") == "exit":
            exit_code = r.exit.exit_code
    return OfflineRun(history, config, run_id, exit_code)


def _wandb_records(raw: bytes, record_type) -> list:
    block, pos, pending, records = 32768, 7, b"", []
    if raw[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        # kinds: 1 full, 2 first, 3 middle, 4 last fragment of one record
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = record_type()
            record.ParseFromString(pending)
            records.append(record)
    return records
