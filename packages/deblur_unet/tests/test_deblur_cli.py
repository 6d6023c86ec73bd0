"""Entry scripts end to end in subprocesses: train (MLflow), resume, inference, evaluation, errors."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.checkpoint import load_checkpoint

PKG = Path(__file__).resolve().parents[1]
TINY = ["--synthetic", "--synthetic-samples", "4", "--batch-size", "2", "--patch-size", "32",
        "--val-patch-size", "32", "--base-ch", "8", "--num-workers", "0", "--seed", "7"]


def _env() -> dict:
    # One thread per process: the suite runs beside other jobs on two cores. No MLflow settings: the runs
    # must work (and their models load) with the default store alone.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _command(script: str, *args) -> list[str]:
    return [sys.executable, str(PKG / script), *map(str, args)]


def run_script(script: str, *args, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run one of the package's scripts in ``cwd``, by default a fresh empty folder: never in the package
    folder, where a user's checkpoints/, mlruns/ or mlflow.db would change what a run does."""
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.run(_command(script, *args), cwd=cwd or scratch, env=_env(), capture_output=True,
                              text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _train(tmp: Path, *extra, check: bool = True) -> subprocess.CompletedProcess:
    """Train in ``tmp`` as the README does from the package folder: MLflow's defaults land in ``tmp``."""
    return run_script("train.py", *TINY, "--checkpoint-dir", tmp / "ckpt", "--output-dir", tmp / "out", *extra,
                      check=check, cwd=tmp)


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["state"]["model"]


def _mlflow(folder: Path):
    """A client of the database a run in ``folder`` writes by default, and that run's experiment id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return client, client.get_experiment_by_name("deblur_unet").experiment_id


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two synthetic epochs with the default tracker (MLflow), run in a temporary folder."""
    tmp = tmp_path_factory.mktemp("trained")
    _train(tmp, "--epochs", "2")
    return tmp


def test_train_writes_checkpoints_samples_and_mlflow_run(trained):
    assert (trained / "ckpt" / "latest.pth").is_file() and (trained / "ckpt" / "best.pth").is_file()
    assert sorted(p.name for p in (trained / "out" / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    state = load_checkpoint(trained / "ckpt" / "latest.pth")
    assert state["kind"] == "deblur_unet" and state["epoch"] == 2
    client, experiment = _mlflow(trained)
    [run] = client.search_runs([experiment])
    assert run.info.status == "FINISHED"
    assert {"train_loss", "val_loss", "psnr", "ssim", "epoch"} <= set(run.data.metrics)
    # Every metric at the optimizer step (2 per epoch here).
    assert _history(client, run.info.run_id, "epoch") == [(2, 1.0), (4, 2.0)]
    assert [step for step, _ in _history(client, run.info.run_id, "val_loss")] == [2, 4]
    assert {"batch_size", "learning_rate", "num_epochs", "patience"} <= set(run.data.params)
    assert (trained / "mlruns" / run.info.run_id / "artifacts" / "images").is_dir()


def test_mlflow_model_is_logged_at_each_best_and_loads(trained, monkeypatch):
    import mlflow
    import mlflow.pytorch

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # loads from the database alone
    client, experiment = _mlflow(trained)
    [run] = client.search_runs([experiment])
    val_loss = _history(client, run.info.run_id, "val_loss")
    bests = [step for i, (step, value) in enumerate(val_loss) if all(value < v for _, v in val_loss[:i])]
    mlflow.set_tracking_uri(f"sqlite:///{trained / 'mlflow.db'}")
    models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert models and all(m.name == "deblur_model" and m.source_run_id == run.info.run_id for m in models)
    # One model per new best val_loss, at that epoch's step.
    assert sorted(output.step for output in run.outputs.model_outputs) == bests
    newest = max(run.outputs.model_outputs, key=lambda output: output.step)
    model = mlflow.pytorch.load_model(f"models:/{newest.model_id}")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 48, 40)).shape == (1, 3, 48, 40)
    signature = mlflow.models.get_model_info(f"models:/{newest.model_id}").signature
    assert signature is not None and signature.inputs.inputs[0].shape == (-1, 3, -1, -1)
    # The newest model is the best checkpoint's.
    best = _weights(trained / "ckpt" / "best.pth")
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_budget_stop_mid_epoch_then_resume_auto_continues_exactly(trained, tmp_path):
    # 2 steps per epoch: the third stops after the first batch of epoch 2. No latest.pth yet: a fresh start.
    proc = _train(tmp_path, "--epochs", "2", "--tracker", "none", "--resume", "auto", "--max-steps", "3")
    assert "--resume auto: no " in proc.stderr and "stopped by step budget (3 steps)" in proc.stderr
    stopped = load_checkpoint(tmp_path / "ckpt" / "latest.pth")
    assert (stopped["epoch"], stopped["global_step"], stopped["extra"]["epoch_step"]) == (1, 3, 1)
    proc = _train(tmp_path, "--epochs", "2", "--tracker", "none", "--resume", "auto")
    assert f"--resume auto: resuming {tmp_path / 'ckpt' / 'latest.pth'}" in proc.stderr
    straight = load_checkpoint(trained / "ckpt" / "latest.pth")
    resumed = load_checkpoint(tmp_path / "ckpt" / "latest.pth")
    assert straight["state"]["model"].keys() == resumed["state"]["model"].keys()
    for key, value in straight["state"]["model"].items():
        assert torch.equal(value, resumed["state"]["model"][key]), key
    # The epoch's mean loss carried over the stop: both steps of epoch 2, not only the one after it.
    assert resumed["extra"]["metrics"]["train_loss"] == straight["extra"]["metrics"]["train_loss"]


# Slow: the scaffold's killed-then-continued MLflow run is tested in shared/tests/test_training.py.
@pytest.mark.slow
def test_sigterm_marks_the_mlflow_run_killed_and_resume_continues_it(tmp_path):
    args = [*TINY, "--checkpoint-dir", tmp_path / "ckpt", "--output-dir", tmp_path / "out", "--sample-every", "0"]
    proc = subprocess.Popen(_command("train.py", *args, "--epochs", "1000"), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "ckpt" / "latest.pth").exists():  # an epoch done: training is under way
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, err
    client, experiment = _mlflow(tmp_path)
    [killed] = client.search_runs([experiment])
    assert killed.info.status == "KILLED"
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow.search_logged_models(experiment_ids=[experiment], output_format="list"), "no best model yet"

    epochs = load_checkpoint(tmp_path / "ckpt" / "latest.pth")["epoch"] + 1  # finish the stopped epoch
    _train(tmp_path, "--sample-every", "0", "--epochs", epochs, "--resume", "auto")
    [run] = client.search_runs([experiment])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    history = _history(client, run.info.run_id, "epoch")
    assert [value for _, value in history] == list(range(1, epochs + 1))
    assert len({step for step, _ in history}) == epochs
    assert len(_history(client, run.info.run_id, "val_loss")) == epochs


def test_fresh_run_refuses_to_overwrite_checkpoints(trained):
    before = (trained / "ckpt" / "latest.pth").read_bytes()
    proc = run_script(
        "train.py", *TINY, "--epochs", "1", "--tracker", "none", "--checkpoint-dir", trained / "ckpt",
        "--output-dir", trained / "out2", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "--resume" in proc.stderr
    assert (trained / "ckpt" / "latest.pth").read_bytes() == before


def test_inference_cli_file_and_folder_keep_size(trained, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for name, size in [("odd", (67, 141)), ("wide", (40, 300))]:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
    ckpt = trained / "ckpt" / "best.pth"
    run_script("inference.py", "--checkpoint", ckpt, "--input", folder, "--output", tmp_path / "out",
               "--tile-size", "64", "--overlap", "16", "--device", "cpu")
    assert Image.open(tmp_path / "out" / "odd.png").size == (141, 67)
    assert Image.open(tmp_path / "out" / "wide.png").size == (300, 40)
    run_script("inference.py", "--checkpoint", ckpt, "--input", folder / "odd.jpg", "--output",
               tmp_path / "single.png", "--tile-size", "64", "--overlap", "16", "--blend", "gaussian")
    assert Image.open(tmp_path / "single.png").size == (141, 67)


def test_inference_cli_folder_with_a_corrupt_file_writes_the_rest_and_fails(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    bad = folder / "b.png"
    bad.write_bytes(bad.read_bytes()[:300])
    proc = run_script("inference.py", "--checkpoint", trained / "ckpt" / "best.pth", "--input", folder, "--output",
                      tmp_path / "out", "--tile-size", "32", "--overlap", "8", "--device", "cpu", check=False)
    assert proc.returncode == 4, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert f"error: {bad}: unreadable or truncated image" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: 1 of 3 images failed (b.png); 2 written"


def test_evaluate_cli_writes_json_and_table(trained, tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("blur", "sharp"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    for name in ("a", "b"):
        sharp = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(sharp).save(tmp_path / "pairs" / "sharp" / f"{name}.png")
        Image.fromarray(sharp // 2).save(tmp_path / "pairs" / "blur" / f"{name}.png")
    proc = run_script("evaluate.py", "--checkpoint", trained / "ckpt" / "best.pth", "--data-dir", tmp_path / "pairs",
                      "--output", tmp_path / "m.json", "--tile-size", "32", "--overlap", "8")
    results = json.loads((tmp_path / "m.json").read_text())
    assert results["count"] == 2 and {"psnr", "ssim", "input_psnr", "input_ssim"} <= set(results["mean"])
    assert set(results["per_image"]) == {"a.png", "b.png"}
    assert "PSNR out" in proc.stdout and "mean (2)" in proc.stdout


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("missing", ["--data-dir", "{tmp}/nope"], "data folder not found"),
        ("empty", ["--data-dir", "{tmp}/data"], "no images found"),
        ("unpaired", ["--data-dir", "{tmp}/data"], "no matching file"),
        ("small", ["--data-dir", "{tmp}/data", "--patch-size", "64"], "smaller than the 64×64 patch"),
        ("truncated", ["--data-dir", "{tmp}/data"], "unreadable or truncated"),
        ("none", ["--synthetic", "--patch-size", "30"], "multiple of 16"),
        ("none", ["--synthetic", "--resume", "{tmp}/missing.pth"], "checkpoint not found"),
        ("corrupt", ["--synthetic", "--resume", "{tmp}/bad.pth"], "bad.pth"),
    ],
)
def test_bad_training_inputs_give_one_line_errors(tmp_path, capsys, setup, args, message):
    data = tmp_path / "data"
    if setup in ("empty", "unpaired", "small", "truncated"):
        (data / "blur").mkdir(parents=True)
        (data / "sharp").mkdir(parents=True)
    if setup in ("unpaired", "small", "truncated"):
        image = np.zeros((40, 40, 3), dtype=np.uint8)
        for sub in ("blur", "sharp"):
            Image.fromarray(image).save(data / sub / "a.png")
        if setup == "unpaired":
            Image.fromarray(image).save(data / "blur" / "b.png")
        if setup == "truncated":
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(
                data / "blur" / "a.png")
            Image.fromarray(np.zeros((80, 80, 3), dtype=np.uint8)).save(data / "sharp" / "a.png")
            path = data / "blur" / "a.png"
            path.write_bytes(path.read_bytes()[:200])
    if setup == "corrupt":
        (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--patch-size" not in argv:
        argv += ["--patch-size", "32"]
    from deblur_unet.train import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--val-patch-size", "32", "--base-ch", "8", "--num-workers", "0", "--epochs", "1",
              "--tracker", "none", "--checkpoint-dir", str(tmp_path / "ck"), "--output-dir", str(tmp_path / "o"),
              "--synthetic-samples", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not (tmp_path / "ck" / "latest.pth").exists()


def test_bad_inputs_message_through_subprocess(tmp_path):
    proc = run_script("train.py", "--data-dir", tmp_path / "nope", "--tracker", "none", check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: data folder not found"]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 10)
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    proc = run_script("inference.py", "--checkpoint", bad, "--input", tmp_path / "x.png", "--output", tmp_path / "o",
                      check=False)
    assert proc.returncode == 2 and "bad.pth" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("size", [(2048, 2048), (1333, 1999)])
def test_inference_cli_large_and_odd_images_on_cpu(trained, tmp_path, size):
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "big.png")
    run_script("inference.py", "--checkpoint", trained / "ckpt" / "best.pth", "--input", tmp_path / "big.png",
               "--output", tmp_path / "out.png", "--device", "cpu", "--tile-size", "512", "--overlap", "64",
               "--batch-size", "4")
    assert Image.open(tmp_path / "out.png").size == (size[1], size[0])


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_resume_matches(tmp_path):
    args = [*TINY, "--synthetic-samples", "16", "--epochs", "2", "--tracker", "none", "--sample-every", "0",
            "--deterministic"]
    straight = tmp_path / "straight"
    run_script("train.py", *args, "--checkpoint-dir", straight, "--output-dir", straight)
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(_command("train.py", *args, "--checkpoint-dir", stopped, "--output-dir", stopped),
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (stopped / "latest.pth").exists():  # first epoch done: stop somewhere in the second
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("training finished before the signal arrived")
    assert proc.returncode == 75, err
    run_script("train.py", *args, "--checkpoint-dir", stopped, "--output-dir", stopped,
               "--resume", stopped / "latest.pth")
    a, b = _weights(straight / "latest.pth"), _weights(stopped / "latest.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
