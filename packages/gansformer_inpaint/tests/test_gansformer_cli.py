"""Entry scripts end to end in subprocesses: train, resume, trackers, infer, evaluate, bad inputs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansformer_inpaint.cli import evaluate_entry, infer_entry, train_entry
from gansformer_inpaint.training.plot import COLOURS
from gansformer_inpaint.training.trainer import CURVES

torch.set_num_threads(1)

PKG = Path(__file__).resolve().parents[1]
DATA = PKG.parents[1].parent / "shared" / "data" / "inpainting"
TINY = ["--img-size", "32", "--base-channels", "8", "--d-channels", "8", "--latent-dim", "32", "--latent-num", "4",
        "--num-heads", "4", "--workers", "0", "--device", "cpu"]


def run(args, tmp_path, check=True, **env_extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
           "WANDB_SILENT": "true", **env_extra}
    proc = subprocess.run([sys.executable, *args], cwd=PKG, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def train(tmp_path, run_dir, *extra, check=True):
    return run(["main.py", "--synthetic", "--synthetic-size", "4", "--batch-size", "2", "--no-wandb",
                "--checkpoint-dir", str(run_dir), "--deterministic", *TINY, *extra], tmp_path, check=check)


def train_inproc(run_dir, *extra):
    train_entry(["--synthetic", "--synthetic-size", "4", "--batch-size", "2", "--no-wandb",
                 "--checkpoint-dir", str(run_dir), *TINY, *extra])


def exit_code_and_error(entry, argv, capsys):
    with pytest.raises(SystemExit) as info:
        entry(argv)
    err = capsys.readouterr().err.strip()
    return info.value.code, err.splitlines()[-1] if err else ""


def weights(path):
    return torch.load(path, weights_only=True)["state"]


def assert_same_weights(a, b):
    full, split = weights(a), weights(b)
    for part in ("generator", "discriminator", "opt_g", "opt_d"):
        flat_a, flat_b = _flatten(full[part]), _flatten(split[part])
        assert flat_a.keys() == flat_b.keys()
        for key, value in flat_a.items():
            other = flat_b[key]
            same = torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
            assert same, f"{part}.{key} differs after resume"


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        return {f"{prefix}{i}": v for i, v in enumerate(obj)} if not any(isinstance(v, dict) for v in obj) else \
            {k: v for i, item in enumerate(obj) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix: obj}


def test_main_script_end_to_end(tmp_path):
    """The issue's acceptance command, at tiny sizes: train, checkpoint, samples, then resume."""
    run_dir = tmp_path / "run"
    train(tmp_path, run_dir, "--epochs", "1", "--save-interval", "1")
    for name in ("latest.pth", "best.pth", "checkpoint_2.pt", "samples/epoch_0001.png", "loss_curve.png"):
        assert (run_dir / name).is_file(), name
    train_inproc(run_dir, "--epochs", "2", "--resume", str(run_dir / "checkpoint_2.pt"))
    assert (run_dir / "samples" / "epoch_0002.png").is_file()
    assert torch.load(run_dir / "latest.pth", weights_only=True)["global_step"] == 4


def test_resume_mid_epoch_equals_uninterrupted_inprocess(tmp_path):
    train_inproc(tmp_path / "full", "--epochs", "2", "--deterministic")
    # The step budget stops mid-epoch and returns normally (exit status 0).
    train_inproc(tmp_path / "split", "--epochs", "2", "--max-steps", "3", "--deterministic")
    state = torch.load(tmp_path / "split" / "latest.pth", weights_only=True)
    assert (state["extra"]["epoch"], state["extra"]["batch_in_epoch"], state["global_step"]) == (1, 1, 3)
    train_inproc(tmp_path / "split", "--epochs", "2", "--deterministic", "--resume", str(tmp_path / "split" / "latest.pth"))
    assert_same_weights(tmp_path / "full" / "latest.pth", tmp_path / "split" / "latest.pth")
    # The stop logged nothing an uninterrupted run does not.
    assert (tmp_path / "split" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()


@pytest.mark.slow
def test_train_resume_equals_uninterrupted(tmp_path):
    train(tmp_path, tmp_path / "full", "--epochs", "2")
    # Interrupted mid-epoch: 3 steps of the 4, then resume to the end.
    train(tmp_path, tmp_path / "split", "--epochs", "2", "--max-steps", "3")
    state = torch.load(tmp_path / "split" / "latest.pth", weights_only=True)
    assert (state["extra"]["epoch"], state["extra"]["batch_in_epoch"], state["global_step"]) == (1, 1, 3)
    proc = train(tmp_path, tmp_path / "split", "--epochs", "2", "--resume", str(tmp_path / "split" / "latest.pth"))
    assert "resumed from" in proc.stderr
    assert_same_weights(tmp_path / "full" / "latest.pth", tmp_path / "split" / "latest.pth")
    assert (tmp_path / "full" / "samples" / "epoch_0002.png").is_file()


def test_wandb_offline_tracker(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "wb"
    train_entry(["--synthetic", "--synthetic-size", "2", "--batch-size", "2", "--epochs", "1", "--wandb",
                 "--checkpoint-dir", str(run_dir), *TINY])
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run written"


def readme_logged_names() -> tuple[set[str], set[str]]:
    """The tracker and ``metrics.jsonl`` names of the README's "What a run logs" table."""
    section = (PKG / "README.md").read_text().split("### What a run logs", 1)[1].split("\n#", 1)[0]
    tracker, jsonl = set(), set()
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`"):
            tracker.add(cells[0].split("`")[1])
            if cells[1] != "–":
                jsonl.add(cells[1].strip("`"))
    return tracker, jsonl


@pytest.fixture(scope="module")
def short_tensorboard_run(tmp_path_factory):
    """Two epochs of one step each at the default --log-interval (10): fewer steps than one interval."""
    pytest.importorskip("tensorboard")
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    train_entry(["--synthetic", "--synthetic-size", "2", "--batch-size", "2", "--epochs", "2", "--log-interval", "10",
                 "--tracker", "tensorboard", "--checkpoint-dir", str(run_dir), *TINY])
    return run_dir


def test_tracker_and_metrics_file_log_exactly_what_the_readme_lists(short_tensorboard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(short_tensorboard_run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tracker, jsonl = readme_logged_names()
    assert set(events.Tags()["scalars"]) | set(events.Tags()["images"]) == tracker
    records = [json.loads(line) for line in (short_tensorboard_run / "metrics.jsonl").read_text().splitlines()]
    assert {key for r in records for key in r} - {"step"} == jsonl


def test_a_short_run_logs_every_epoch_and_plots_every_logged_curve(short_tensorboard_run):
    records = [json.loads(line) for line in (short_tensorboard_run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records if "g_loss" in r}) == [1, 2]  # each epoch's step, not only the first
    # Each panel of the loss curve draws its points in its own colour: no empty frames.
    curve = np.asarray(Image.open(short_tensorboard_run / "loss_curve.png").convert("RGB"))
    panel_h = (curve.shape[0] - 30) // len(CURVES)
    for p, key in enumerate(CURVES):
        panel = curve[30 + p * panel_h: 30 + (p + 1) * panel_h]
        assert (panel == COLOURS[p]).all(axis=-1).sum() > 10, f"panel {key} has no points"


def test_sample_grid_names_its_columns(short_tensorboard_run):
    grid = np.asarray(Image.open(short_tensorboard_run / "samples" / "epoch_0002.png").convert("L"))
    cell = 32
    header = grid[: grid.shape[0] - (2 * (cell + 2) + 2)]  # above the two sample rows (2 px padding)
    assert header.shape[0] >= 10
    for j in range(3):  # a dark label above each of masked | output | target
        column = header[:, 2 + j * (cell + 2): 2 + j * (cell + 2) + cell]
        assert (column < 100).sum() > 5, f"column {j} has no label"


def _write_pair(folder: Path, name: str, size=(40, 36), mask_size=None):
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "mask").mkdir(parents=True, exist_ok=True)
    img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    ms = mask_size or size
    mask = np.zeros((ms[1], ms[0]), np.uint8)
    mask[5:15, 5:20] = 255
    Image.fromarray(img).save(folder / "img" / f"{name}.png")
    Image.fromarray(mask).save(folder / "mask" / f"{name}.png")
    return folder / "img" / f"{name}.png", folder / "mask" / f"{name}.png"


def test_infer_and_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_inproc(run_dir, "--epochs", "1")
    ckpt = str(run_dir / "latest.pth")
    img, mask = _write_pair(tmp_path / "in", "a", size=(70, 50))
    for mode in ("resize", "tile"):
        out = tmp_path / f"out_{mode}.png"
        infer_entry(["--checkpoint", ckpt, "--image", str(img), "--mask", str(mask), "--output", str(out),
                     "--mode", mode, "--device", "cpu"])
        result = np.asarray(Image.open(out))
        source = np.asarray(Image.open(img))
        known = np.asarray(Image.open(mask)) < 128
        assert result.shape == source.shape
        assert np.array_equal(result[known], source[known])
        assert not np.array_equal(result[~known], source[~known])
    infer_entry(["--checkpoint", ckpt, "--image", str(img.parent), "--mask", str(mask.parent),
                 "--output", str(tmp_path / "outdir"), "--device", "cpu"])
    assert (tmp_path / "outdir" / "a.png").is_file()
    # A corrupt image in a folder: reported and skipped, the others written, exit 4 (some failed).
    _write_pair(tmp_path / "in", "b", size=(70, 50))
    bad = tmp_path / "in" / "img" / "b.png"
    bad.write_bytes(bad.read_bytes()[:300])
    code, err = exit_code_and_error(infer_entry, ["--checkpoint", ckpt, "--image", str(img.parent), "--mask",
                                                  str(mask.parent), "--output", str(tmp_path / "outdir2"),
                                                  "--device", "cpu"], capsys)
    assert code == 4 and err == "error: 1 of 2 images failed (b.png); 1 written"
    assert [p.name for p in (tmp_path / "outdir2").iterdir()] == ["a.png"]
    if (DATA / "ground_truth").is_dir():
        out_json = tmp_path / "metrics.json"
        evaluate_entry(["--checkpoint", ckpt, "--data-root", str(DATA), "--output", str(out_json), "--device", "cpu"])
        metrics = json.loads(out_json.read_text())
        assert metrics["count"] >= 10
        assert {"psnr_hole", "ssim_hole", "l1_hole"} <= set(metrics["mean"])
        assert 0 < metrics["mean"]["l1_hole"] < 1 and metrics["mean"]["psnr"] > metrics["mean"]["psnr_hole"]
        assert "psnr_hole" in capsys.readouterr().out


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_inproc(run_dir, "--epochs", "1")
    ckpt = str(run_dir / "latest.pth")
    img, mask = _write_pair(tmp_path / "in", "a", size=(40, 36), mask_size=(20, 18))
    code, err = exit_code_and_error(infer_entry, ["--checkpoint", ckpt, "--image", str(img), "--mask", str(mask),
                                                  "--output", str(tmp_path / "o.png"), "--device", "cpu"], capsys)
    assert code == 2 and "mask is 20x18 but image" in err

    gif = tmp_path / "in" / "img" / "b.gif"
    Image.new("RGB", (40, 36)).save(gif)
    code, err = exit_code_and_error(infer_entry, ["--checkpoint", ckpt, "--image", str(gif), "--mask", str(mask),
                                                  "--output", str(tmp_path / "o.png"), "--device", "cpu"], capsys)
    assert code == 2 and "unsupported image format '.gif'" in err

    code, err = exit_code_and_error(infer_entry, ["--checkpoint", str(tmp_path / "nope.pth"), "--image", str(img),
                                                  "--mask", str(mask), "--output", str(tmp_path / "o.png")], capsys)
    assert code == 2 and "checkpoint not found" in err

    data = tmp_path / "data"
    for sub in ("extracted", "ground_truth"):
        (data / sub).mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(data / "extracted" / "x.png")
    Image.new("RGB", (32, 32)).save(data / "ground_truth" / "y.png")
    code, err = exit_code_and_error(train_entry, ["--data-root", str(data), "--no-wandb", "--checkpoint-dir",
                                                  str(tmp_path / "r2"), *TINY], capsys)
    assert code == 2 and err.startswith("error: ") and "no matching file" in err

    code, err = exit_code_and_error(train_entry, ["--synthetic", "--no-wandb", "--img-size", "30"], capsys)
    assert code == 2 and "img_size must be a multiple of 8" in err

    before = (run_dir / "latest.pth").read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    code, err = exit_code_and_error(train_entry, ["--synthetic", "--no-wandb", "--resume", str(bad),
                                                  "--checkpoint-dir", str(run_dir), *TINY], capsys)
    assert code == 2 and "bad.pth" in err and ("not a readable checkpoint" in err or "refused to load" in err)
    assert (run_dir / "latest.pth").read_bytes() == before  # a failed run never clobbers what exists


@pytest.mark.slow
def test_bad_input_through_the_script(tmp_path):
    proc = run(["main.py", "--no-wandb", "--data-root", str(tmp_path / "missing"), "--checkpoint-dir",
                str(tmp_path / "r"), *TINY], tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: dataset folder not found "
                                                "(expected extracted/ and ground_truth/ inside)"]


@pytest.mark.slow
def test_sigterm_saves_latest_and_exits_75(tmp_path):
    import signal
    import time

    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "main.py", "--synthetic", "--synthetic-size", "400", "--batch-size", "2",
                             "--epochs", "1", "--no-wandb", "--log-interval", "1", "--checkpoint-dir", str(run_dir),
                             *TINY], cwd=PKG, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 75, err[-2000:]
    state = torch.load(run_dir / "latest.pth", weights_only=True)
    assert state["extra"]["epoch"] == 0 and 0 < state["extra"]["batch_in_epoch"] < 200
