"""Each backend writes what it should, read back with the library's own reader."""

import json
import struct
import time

import numpy as np
import pytest

from shared.errors import ConfigError
from shared.tracking import NoTracker, create_tracker

CONFIG = {"lr": 1e-4, "model": {"base_ch": 32}, "data_dir": None}
IMAGE = np.zeros((8, 12, 3), dtype=np.uint8)


def _log(tracker):
    for step in range(3):
        tracker.log_metrics({"train_loss": 1.0 / (step + 1)}, step=step)
    tracker.log_image("samples", IMAGE, step=2)
    tracker.finish()


def test_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _log(create_tracker("tensorboard", tmp_path, config=CONFIG))
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = events.Scalars("train_loss")
    assert [s.step for s in scalars] == [0, 1, 2]
    assert scalars[-1].value == pytest.approx(1 / 3)
    assert events.Images("samples")[0].width == 12


def test_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").resolve().as_uri()
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; scope it to this test so later subprocesses
    # (other packages' CLI tests) do not inherit this store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = create_tracker("mlflow", tmp_path, project="exp", run_name="r1", config=CONFIG)
    run_id = tracker.run.info.run_id
    _log(tracker)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["model.base_ch"] == "32" and run.data.params["lr"] == "0.0001"
    history = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert run.info.run_name == "r1" and run.info.status == "FINISHED"


def _wandb_records(path):
    """Records of a .wandb file: a LevelDB-style log (32 KiB blocks) of wandb protobuf Records.

    wandb >= 0.2x reads these files in its Go core only; the framing is read here and every record is
    decoded with wandb's own protobuf classes.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    raw, block, pos, pending, records = path.read_bytes(), 32768, 7, b"", []
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = create_tracker("wandb", tmp_path, project="proj", run_name="r1", config=CONFIG)
    run_dir = tmp_path / "wandb"
    _log(tracker)
    runs = list(run_dir.glob("offline-run-*"))
    assert len(runs) == 1
    # wandb-core may still be flushing its log when finish() returns under load: wait for the exit record.
    for _ in range(120):
        records = _wandb_records(next(runs[0].glob("run-*.wandb")))  # what `wandb sync` would upload
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.25)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == [0, 1, 2]
    assert history[-1]["train_loss"] == pytest.approx(1 / 3)
    assert history[-1]["samples/width"] == 12
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["model.base_ch"] == 32


def test_none_and_unknown(tmp_path):
    assert isinstance(create_tracker("none", tmp_path), NoTracker)
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        create_tracker("comet", tmp_path)
