"""Each backend writes what it should, read back with the library's own reader."""


import numpy as np
import pytest

from shared.errors import ConfigError
from shared.tracking import NoTracker, create_tracker, read_offline_wandb

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


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = create_tracker("wandb", tmp_path, project="proj", run_name="r1", config=CONFIG)
    run_dir = tmp_path / "wandb"
    _log(tracker)
    runs = list(run_dir.glob("offline-run-*"))
    assert len(runs) == 1
    offline = read_offline_wandb(runs[0])
    history = offline.history
    # One W&B step per log call; our step is the global_step metric every chart is drawn against.
    assert [h["_step"] for h in history] == [0, 1, 2, 3]
    assert [h["global_step"] for h in history] == [0, 1, 2, 2]
    assert history[2]["train_loss"] == pytest.approx(1 / 3)
    assert history[3]["samples/width"] == 12
    assert offline.config["model.base_ch"] == 32


def test_none_and_unknown(tmp_path):
    assert isinstance(create_tracker("none", tmp_path), NoTracker)
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        create_tracker("comet", tmp_path)


def test_wandb_keeps_metrics_logged_at_an_earlier_step(tmp_path, monkeypatch):
    """Validation logged at the epoch number after training at the global step: W&B used to drop it
    ("ignoring partial history record"); charted against global_step, every record is kept."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = create_tracker("wandb", tmp_path, project="proj")
    tracker.log_metrics({"train/loss": 0.5}, step=8)
    tracker.log_metrics({"val/loss": 0.4}, step=1)
    tracker.log_image("val/grid", IMAGE, step=1)
    tracker.finish()
    history = read_offline_wandb(next((tmp_path / "wandb").glob("offline-run-*"))).history
    val = [h for h in history if "val/loss" in h]
    assert len(val) == 1 and val[0]["val/loss"] == pytest.approx(0.4) and val[0]["global_step"] == 1
    assert any("val/grid/width" in h for h in history)


def test_wandb_resume_continues_the_run_and_marks_a_preempted_one(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = create_tracker("wandb", tmp_path, project="proj")
    first.log_metrics({"loss": 1.0}, step=1)
    first.finish("killed")
    second = create_tracker("wandb", tmp_path, project="proj", resume_id=first.run_id)
    assert second.run_id == first.run_id
    second.log_metrics({"loss": 0.5}, step=2)
    second.finish()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    offline = [read_offline_wandb(folder) for folder in runs]
    assert {run.run_id for run in offline} == {first.run_id}
    assert sorted(run.exit_code for run in offline) == [0, 75]


def test_wandb_mode_follows_the_login(tmp_path, monkeypatch, capsys):
    from shared.tracking import wandb_logged_in

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine example.org login user password secret\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert not wandb_logged_in()
    # What `wandb login` writes.
    netrc_file.write_text("machine api.wandb.ai login user password " + "a" * 40 + "\n")
    assert wandb_logged_in()
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    assert not wandb_logged_in()
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    assert wandb_logged_in()


def test_wandb_without_login_says_offline_once(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = create_tracker("wandb", tmp_path, project="proj")
    assert tracker.run.settings.mode == "offline"
    tracker.finish()
    assert capsys.readouterr().err.count("W&B is not logged in") == 1


def test_mlflow_defaults_to_a_database_and_resume_continues_one_run(tmp_path, monkeypatch):
    """MLflow 3 serves this store with no environment variable; a killed run is marked KILLED, and the
    resumed training continues it, so one run holds the whole history."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    first = create_tracker("mlflow", tmp_path, project="exp", config=CONFIG)
    first.log_metrics({"loss": 1.0}, step=1)
    first.finish("killed")
    assert (tmp_path / "mlflow.db").is_file()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(first.run_id).info.status == "KILLED"
    second = create_tracker("mlflow", tmp_path, project="exp", config={**CONFIG, "resume": "latest.pth"},
                            resume_id=first.run_id)
    second.log_metrics({"loss": 0.5}, step=2)
    second.finish()
    experiment = client.get_experiment_by_name("exp")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [first.run_id]
    assert runs[0].info.status == "FINISHED" and runs[0].data.params["resume"] == "latest.pth"
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "loss")] == [(1, 1.0), (2, 0.5)]


def test_outcome_of_exits():
    from shared.preemption import EXIT_PREEMPTED
    from shared.tracking import outcome_of

    assert outcome_of(None) == "finished"
    assert outcome_of(SystemExit(0)) == "finished"
    assert outcome_of(SystemExit(EXIT_PREEMPTED)) == "killed"
    assert outcome_of(KeyboardInterrupt()) == "killed"
    assert outcome_of(SystemExit(3)) == "failed"
    assert outcome_of(ValueError("bug")) == "failed"
