"""Entry scripts end to end in subprocesses: train (MLflow), resume, inference, evaluation, errors."""

import json
import os
import subprocess
import sys
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
    # One thread per process: the suite runs beside other jobs on two cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONWARNINGS": "ignore"}


def run_script(script: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, script, *map(str, args)], cwd=PKG, env=_env(),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _train(tmp: Path, *extra) -> subprocess.CompletedProcess:
    return run_script("train.py", *TINY, "--checkpoint-dir", tmp / "ckpt", "--output-dir", tmp / "out",
                      "--mlruns-dir", tmp / "mlruns", *extra)


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["state"]["model"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two synthetic epochs with the default tracker (MLflow) into a temporary mlruns/."""
    tmp = tmp_path_factory.mktemp("trained")
    _train(tmp, "--epochs", "2")
    return tmp


def test_train_writes_checkpoints_samples_and_mlflow_run(trained):
    assert (trained / "ckpt" / "latest.pth").is_file() and (trained / "ckpt" / "best.pth").is_file()
    assert sorted(p.name for p in (trained / "out" / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    state = load_checkpoint(trained / "ckpt" / "latest.pth")
    assert state["kind"] == "deblur_unet" and state["epoch"] == 2
    runs = [p for p in (trained / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    assert len(runs) == 1
    metrics = {p.name for p in (runs[0] / "metrics").iterdir()}
    assert {"train_loss", "val_loss", "psnr", "ssim"} <= metrics
    lines = (runs[0] / "metrics" / "val_loss").read_text().split("\n")
    assert len([line for line in lines if line.strip()]) == 2
    params = {p.name for p in (runs[0] / "params").iterdir()}
    assert {"batch_size", "learning_rate", "num_epochs", "patience"} <= params
    logged = list((trained / "mlruns").rglob("MLmodel"))
    assert logged, "mlflow.pytorch.log_model wrote no model"


def test_resume_continues_exactly(trained, tmp_path):
    _train(tmp_path, "--epochs", "1", "--tracker", "none")
    _train(tmp_path, "--epochs", "2", "--tracker", "none", "--resume", tmp_path / "ckpt" / "latest.pth")
    straight, resumed = _weights(trained / "ckpt" / "latest.pth"), _weights(tmp_path / "ckpt" / "latest.pth")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


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
    proc = run_script("train.py", "--data-dir", tmp_path / "nope", "--tracker", "none", check=False)
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
    import signal
    import time

    args = [*TINY, "--synthetic-samples", "16", "--epochs", "2", "--tracker", "none", "--sample-every", "0",
            "--deterministic"]
    straight = tmp_path / "straight"
    run_script("train.py", *args, "--checkpoint-dir", straight, "--output-dir", straight)
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "train.py", *args, "--checkpoint-dir", stopped, "--output-dir", stopped],
                            cwd=PKG, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
