"""The run scaffold, driven by a toy trainer the way a package's trainer drives it."""

import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.amp import MixedPrecision
from shared.checkpoint import CheckpointManager, load_checkpoint
from shared.errors import ConfigError
from shared.preemption import EXIT_PREEMPTED
from shared.sampler import EpochSampler
from shared.seed import make_generator, seed_everything
from shared.training import (
    Budget,
    RunningMeans,
    TrainingRun,
    add_run_arguments,
    resolve_resume,
    validation_line,
    validation_metrics,
)

KIND = "toy"
BATCH, EPOCHS = 4, 3


def _data():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(24, 8, generator=g), torch.randn(24, 1, generator=g))


def train(folder, resume=None, overwrite=False, budget=Budget(), tracker="none", signal_at=None):
    """A complete trainer on the scaffold; returns (exit status, model, step)."""
    seed_everything(0)
    manager = CheckpointManager(folder, save_every_n_epochs=1)
    run = TrainingRun(KIND, manager, resume=resume, overwrite=overwrite, budget=budget)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    amp = MixedPrecision("fp32", "cpu")
    objects = {"model": model, "optimizer": optimizer, "amp": amp}
    start_epoch, step, skip = 0, 0, 0
    means = RunningMeans()
    if run.resuming:
        info = run.restore(objects)
        start_epoch, step, skip = info.epoch, info.global_step, int(info.extra.get("epoch_step", 0))
        means.load_state_dict(info.extra.get("means", {}))
    dataset = _data()
    sampler = EpochSampler(len(dataset), seed=0)
    tracker_ = run.open_tracker(tracker, folder, project="toy")

    def state(epoch, epoch_step):
        return run.state(epoch=epoch, global_step=step, objects=objects,
                         extra={"epoch_step": epoch_step, "means": means.state_dict()})

    with run:
        for epoch in range(start_epoch, EPOCHS):
            first = skip if epoch == start_epoch else 0
            sampler.set_epoch(epoch, start=first * BATCH)
            if not first:
                means = RunningMeans()
            # A DataLoader draws its base seed from the global RNG unless it has a generator: with one, a
            # loader made mid-epoch on resume leaves the global stream (dropout) as the straight run's.
            for i, (x, y) in enumerate(DataLoader(dataset, batch_size=BATCH, sampler=sampler,
                                                     generator=make_generator(epoch)), start=first):
                loss = nn.functional.mse_loss(model(x), y)
                if amp.backward_and_step(loss, optimizer).stepped:
                    step += 1
                    means.add({"loss": loss.item()})
                tracker_.log_metrics({"loss": loss.item()}, step)
                if step == signal_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                if run.should_stop(step):
                    return run.stop(state(epoch, i + 1)), model, step
            run.end_epoch(state(epoch + 1, 0), epoch + 1, means.reduced()["loss"])
    return 0, model, step


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_budget_stop_and_resume_equal_an_uninterrupted_run(tmp_path):
    status, straight, steps = train(tmp_path / "a")
    assert status == 0 and steps == EPOCHS * 6
    status, _, at = train(tmp_path / "b", budget=Budget(max_steps=8))  # mid-epoch 2
    assert status == 0 and at == 8
    assert load_checkpoint(tmp_path / "b" / "latest.pth")["extra"]["epoch_step"] == 2
    status, resumed, steps = train(tmp_path / "b", resume="auto")
    assert status == 0 and steps == EPOCHS * 6
    assert _same(straight, resumed)
    a, b = load_checkpoint(tmp_path / "a" / "latest.pth"), load_checkpoint(tmp_path / "b" / "latest.pth")
    assert a["best_metric"] == pytest.approx(b["best_metric"], rel=1e-6)
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint_epoch_*")) == [
        "checkpoint_epoch_0001.pth", "checkpoint_epoch_0002.pth", "checkpoint_epoch_0003.pth"]


def test_a_folder_holding_another_run_is_refused(tmp_path):
    train(tmp_path, budget=Budget(max_steps=2))
    with pytest.raises(ConfigError, match=r"holds another run \(latest.pth\); continue it with --resume .*"
                                          r"--overwrite.*--checkpoint-dir"):
        train(tmp_path)
    assert train(tmp_path, overwrite=True)[0] == 0


def test_resume_auto_starts_fresh_in_an_empty_folder(tmp_path, capsys):
    assert resolve_resume("auto", tmp_path / "latest.pth") is None
    assert resolve_resume(None, tmp_path / "latest.pth") is None
    assert train(tmp_path, resume="auto")[2] == EPOCHS * 6
    assert "starting fresh" in capsys.readouterr().err


def test_resume_auto_falls_back_to_the_newest_periodic_checkpoint(tmp_path):
    status, straight, _ = train(tmp_path / "a")
    train(tmp_path / "b", budget=Budget(max_steps=13))  # epochs 1 and 2 done, then mid-epoch 3
    (tmp_path / "b" / "latest.pth").unlink()  # say, deleted by hand or lost with a node's disk
    old = tmp_path / "b" / "checkpoint_epoch_0001.pth"
    os.utime(old, (old.stat().st_atime + 60, old.stat().st_mtime + 60))  # newest by time, not by name
    assert resolve_resume("auto", tmp_path / "b" / "latest.pth",
                          (tmp_path / "b").glob("checkpoint_epoch_*.pth")) == old
    os.utime(old, (old.stat().st_atime - 120, old.stat().st_mtime - 120))
    status, resumed, steps = train(tmp_path / "b", resume="auto")
    assert load_checkpoint(tmp_path / "b" / "checkpoint_epoch_0002.pth")["epoch"] == 2
    assert status == 0 and steps == EPOCHS * 6 and _same(straight, resumed)


def test_signal_stops_with_the_preempted_status_and_the_tracker_run_continues(tmp_path, monkeypatch):
    """A SIGTERM-stopped run is KILLED in MLflow, and resuming it continues the same run, so one run holds
    the whole history (every resume used to open a new run)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        with_exit(folder, signal_at=5)
    assert stopped.value.code == EXIT_PREEMPTED
    run_id = load_checkpoint(folder / "latest.pth")["tracker"]["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "KILLED"
    assert with_exit(folder, resume="auto") == 0
    experiment = client.get_experiment_by_name("toy")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == list(range(1, EPOCHS * 6 + 1))


def with_exit(folder, **kwargs):
    """As an entry point runs it: a non-zero status leaves through SystemExit."""
    status, _, _ = train(folder, tracker="mlflow", **kwargs)
    if status:
        raise SystemExit(status)
    return status


def test_running_means_count_only_what_was_added():
    means = RunningMeans()
    assert means.reduced() == {}
    means.add({"loss": 1.0})
    means.add({"loss": 3.0, "d": 2.0})
    assert means.reduced() == {"d": 1.0, "loss": 2.0}
    assert means.local()["loss"] == 2.0


def test_budget_and_flags_are_checked():
    import argparse

    with pytest.raises(ConfigError, match="--max-minutes must be > 0"):
        Budget(max_minutes=0)
    with pytest.raises(ConfigError, match="--max-steps must be >= 1"):
        Budget(max_steps=0)
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(["--resume", "auto", "--max-minutes", "1.5", "--overwrite"])
    assert (args.resume, args.max_minutes, args.overwrite, args.max_steps) == ("auto", 1.5, True, None)


def test_validation_names_and_line_put_each_baseline_beside_the_model():
    model = {"psnr": 27.4123, "ssim": 0.81234}
    baselines = {"input": {"psnr": 26.95, "ssim": 0.8011}, "mean": {"psnr": 12.5}}
    assert validation_metrics(model, baselines) == {
        "val/psnr": 27.4123, "val/ssim": 0.81234, "val/psnr_input": 26.95, "val/ssim_input": 0.8011,
        "val/psnr_mean": 12.5}
    assert validation_line(model, baselines) == "val psnr 27.41 (input 26.95, mean 12.50) ssim 0.8123 (input 0.8011)"


def test_log_validation_reaches_the_tracker_at_the_global_step(tmp_path):
    run = TrainingRun("toy", CheckpointManager(tmp_path))
    tracker = run.open_tracker("tensorboard", tmp_path / "logs")
    line = run.log_validation({"sad": 6.5}, {"trimap": {"sad": 10.9}}, global_step=7)
    tracker.finish()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents.*")).parent)).Reload()
    assert [(e.step, round(e.value, 3)) for e in events.Scalars("val/sad_trimap")] == [(7, 10.9)]
    assert line == "val sad 6.5000 (trimap 10.90)"


GROUP_SIGNAL_SCRIPT = """
import sys, time
from pathlib import Path
import torch
from torch.utils.data import DataLoader, Dataset
from shared.checkpoint import CheckpointManager
from shared.seed import seed_worker
from shared.training import TrainingRun

class Slow(Dataset):
    def __len__(self):
        return 10_000
    def __getitem__(self, i):
        time.sleep(0.01)
        return torch.zeros(2)

out = Path(sys.argv[1])
run = TrainingRun("toy", CheckpointManager(out))
with run:
    loader = DataLoader(Slow(), batch_size=2, num_workers=2, worker_init_fn=seed_worker)
    for step, _ in enumerate(loader, start=1):
        if step == 3:
            (out / "ready").touch()
        if run.should_stop(step):
            sys.exit(run.stop({"step": step}, where=f"step {step}"))
"""


def test_sigterm_to_the_process_group_with_dataloader_workers_is_a_clean_preemption(tmp_path):
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", GROUP_SIGNAL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM and `timeout` do: workers included
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "Traceback" not in err and "killed by signal" not in err
    assert (tmp_path / "latest.pth").is_file()
