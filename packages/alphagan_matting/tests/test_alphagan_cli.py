"""Entry scripts end to end in subprocesses (cwd = the package folder) on tiny synthetic data."""

from __future__ import annotations

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

from shared.checkpoint import load_checkpoint

PKG = Path(__file__).resolve().parents[1]
QUICK = ["--config", "configs/quick_test.yaml", "--synthetic", "--synthetic-size", "4", "--deterministic",
         "--epochs", "2"]


def run(script: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, script, *map(str, args)], cwd=PKG, env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two epochs of the quick config: 2 steps each (4 synthetic samples, batch 2)."""
    root = tmp_path_factory.mktemp("run_a")
    run("main.py", *QUICK, "--checkpoints-dir", root / "ck", "--log-dir", root / "tb")
    return root


def test_training_writes_checkpoints_logs_and_grids(trained):
    ck = trained / "ck"
    assert {p.name for p in ck.glob("*.pth")} >= {"latest.pth", "best.pth", "checkpoint_epoch_0001.pth",
                                                   "checkpoint_epoch_0002.pth"}
    state = load_checkpoint(ck / "latest.pth")
    assert state["kind"] == "alphagan_matting" and state["epoch"] == 2 and state["global_step"] == 4
    assert list((trained / "tb").glob("events.out.tfevents.*")), "TensorBoard events expected"
    assert (trained / "tb" / "samples" / "epoch_0002.png").is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss_G", "train/loss_D", "train/loss_alpha", "lr/G", "lr/D", "test/SAD",
            "test_epoch/Conn"} <= set(tags["scalars"])
    assert {"train/io", "test/io"} <= set(tags["images"])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)["state"]
    return {f"{m}.{k}": v for m in ("generator", "discriminator") for k, v in state[m].items()}


def _epoch_means(log_dir: Path, step: int) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: e.value for tag in events.Tags()["scalars"] if tag.startswith("train_epoch/")
            for e in events.Scalars(tag) if e.step == step}


@pytest.mark.slow  # two more training runs; ~60 s on a busy 2-core machine
def test_step_budget_stops_mid_epoch_and_resume_auto_matches_uninterrupted(trained, tmp_path):
    ck = tmp_path / "ck"
    common = [*QUICK, "--checkpoints-dir", ck, "--log-dir", tmp_path / "tb", "--resume", "auto"]
    proc = run("main.py", *common, "--max-steps", "3")  # exits 0 after the first batch of epoch 2
    assert "stopped by step budget (3 steps)" in proc.stderr
    stopped = load_checkpoint(ck / "latest.pth")
    assert (stopped["epoch"], stopped["global_step"], stopped["extra"]["batch_in_epoch"]) == (1, 3, 1)
    run("main.py", *common)
    expected, got = _weights(trained / "ck" / "latest.pth"), _weights(ck / "latest.pth")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), f"{key} differs after resume"
    # The resumed epoch's means cover its batches from before the stop too.
    means = _epoch_means(trained / "tb", 4)
    assert set(means) >= {"train_epoch/loss_G", "train_epoch/loss_D"}
    assert _epoch_means(tmp_path / "tb", 4) == means


def _synthetic_pair(folder: Path, stem: str, h: int = 75, w: int = 101) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
    alpha = np.clip((25 - dist) / 6, 0, 1)
    trimap = np.where(alpha >= 1, 255, np.where(alpha <= 0, 0, 128)).astype(np.uint8)
    trimap[(dist > 16) & (dist < 34)] = 128
    paths = folder / "img" / f"{stem}.png", folder / "tri" / f"{stem}.png", folder / "gt" / f"{stem}.png"
    for path, arr in zip(paths, (image, trimap, (alpha * 255).astype(np.uint8)), strict=True):
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(path)
    return paths


def test_infer_full_resolution_known_regions_and_evaluate(trained, tmp_path):
    img, tri, gt = _synthetic_pair(tmp_path, "sample")
    out = tmp_path / "pred" / "sample.png"
    run("infer.py", "--checkpoint", trained / "ck" / "best.pth", "--image", img, "--trimap", tri,
        "--output", out, "--tile-size", "32", "--overlap", "8", "--device", "cpu")
    alpha = np.asarray(Image.open(out))
    trimap = np.asarray(Image.open(tri))
    assert alpha.shape == trimap.shape == (75, 101)
    assert (alpha[trimap == 0] == 0).all() and (alpha[trimap == 255] == 255).all()
    composite = np.asarray(Image.open(out.with_name("sample_composite.png")))
    assert composite.shape == (75, 101, 3)
    assert (composite[trimap == 0] == [0, 255, 0]).all()

    metrics_path = tmp_path / "metrics.json"
    proc = run("evaluate.py", "--pred", out.parent, "--gt", gt.parent, "--trimap", tri.parent,
               "--output", metrics_path)
    result = json.loads(metrics_path.read_text())
    assert set(result["mean"]) == {"SAD", "MSE", "Grad", "Conn"} and result["count"] == 1
    assert all(np.isfinite(v) and v >= 0 for v in result["mean"].values())
    assert "SAD" in proc.stdout and "mean" in proc.stdout


def _one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


# Slow: test_alphagan_config.py checks each config error in-process; this is the same through main.py.
@pytest.mark.slow
def test_bad_config_errors(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("general: {random_seed: 1\n")
    _one_line_error(run("main.py", "--config", bad, "--synthetic", check=False), "broken.yaml", "malformed YAML")
    text = (PKG / "alphagan_matting" / "configs" / "quick_test.yaml").read_text()
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text.replace("  epoches: 2", "  epoches: 2\n  epochs: 3"))
    _one_line_error(run("main.py", "--config", unknown, "--synthetic", check=False), "unknown.yaml",
                    "unknown key 'train.epochs'")


def test_bad_trimap_and_missing_stem_errors(trained, tmp_path):
    img, tri, _ = _synthetic_pair(tmp_path, "x")
    arr = np.asarray(Image.open(tri)).copy()
    arr[arr == 128] = 77  # read as background: nothing left to predict
    Image.fromarray(arr).save(tri)
    proc = run("infer.py", "--checkpoint", trained / "ck" / "best.pth", "--image", img, "--trimap", tri,
               "--output", tmp_path / "a.png", check=False)
    _one_line_error(proc, "x.png", "trimap has no unknown region")
    assert not (tmp_path / "a.png").exists()

    fg = tmp_path / "AIM"
    for sub in ("original", "mask", "trimap"):
        (fg / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(fg / sub / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(fg / "original" / "b.png")
    proc = run("prepare_data.py", "labels", "--fg", fg, "--bg", tmp_path / "img", "--output", tmp_path / "l.csv",
               check=False)
    _one_line_error(proc, "no file with stem 'b'", "mask")


@pytest.mark.slow
def test_sigterm_saves_latest_and_exits_75(tmp_path):
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = ["--config", "configs/quick_test.yaml", "--synthetic", "--synthetic-size", "200", "--epochs", "3",
            "--checkpoints-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "tb")]
    proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=PKG, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list((tmp_path / "tb").glob("events.out.tfevents.*")) and time.time() < deadline:
        time.sleep(0.5)  # the tracker opens right before the handlers go in and the loop starts
    time.sleep(5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 75, stderr[-2000:]
    state = load_checkpoint(tmp_path / "ck" / "latest.pth")
    assert state["global_step"] >= 1 and state["extra"]["batch_in_epoch"] >= 1


def test_infer_folders_in_process(trained, tmp_path, capsys):
    from alphagan_matting.infer import main as infer_main
    from shared.errors import InputsFailed

    _synthetic_pair(tmp_path, "small", 40, 29)
    _synthetic_pair(tmp_path, "large", 90, 130)
    written = infer_main(["--checkpoint", str(trained / "ck" / "latest.pth"), "--image", str(tmp_path / "img"),
                          "--trimap", str(tmp_path / "tri"), "--output", str(tmp_path / "out"), "--no-composite",
                          "--tile-size", "64", "--overlap", "16", "--device", "cpu"])
    assert sorted(p.name for p in written) == ["large.png", "small.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "large.png")).shape == (90, 130)
    assert np.asarray(Image.open(tmp_path / "out" / "small.png")).shape == (40, 29)

    # One bad pair in a folder: reported and skipped, the rest written, the run fails at the end.
    Image.fromarray(np.full((10, 10), 128, np.uint8)).save(tmp_path / "tri" / "small.png")
    with pytest.raises(InputsFailed, match=r"1 of 2 images failed \(small\.png\); 1 written") as info:
        infer_main(["--checkpoint", str(trained / "ck" / "latest.pth"), "--image", str(tmp_path / "img"),
                    "--trimap", str(tmp_path / "tri"), "--output", str(tmp_path / "out2")])
    assert info.value.exit_status == 4
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["large.png", "large_composite.png"]
    assert re.search(r"small\.png: trimap is 10x10 but .* is 29x40 \(skipped\)", capsys.readouterr().err)


def test_conversions_are_said_once_per_inference_and_evaluation(trained, tmp_path, capsys):
    from alphagan_matting.evaluate import main as evaluate_main
    from alphagan_matting.infer import main as infer_main

    image, _, gt = _synthetic_pair(tmp_path, "a", 40, 29)
    _, trimap, _ = _synthetic_pair(tmp_path, "b", 40, 29)
    Image.open(image).convert("L").save(image)  # grayscale image
    Image.open(trimap).convert("RGBA").save(trimap)  # RGBA trimap
    Image.open(gt).convert("RGB").save(gt)  # colour ground truth
    capsys.readouterr()
    infer_main(["--checkpoint", str(trained / "ck" / "latest.pth"), "--image", str(tmp_path / "img"),
                "--trimap", str(tmp_path / "tri"), "--output", str(tmp_path / "out"), "--no-composite",
                "--tile-size", "64", "--overlap", "16", "--device", "cpu"])
    trimap_lines = [f"note: trimaps: colour images read as grayscale: 1 of 2 (first: {trimap})",
                    f"note: trimaps: alpha channel dropped: 1 of 2 (first: {trimap})"]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: images: grayscale images read as RGB: 1 of 2 (first: {image})", *trimap_lines]
    evaluate_main(["--pred", str(tmp_path / "out"), "--gt", str(tmp_path / "gt"), "--trimap", str(tmp_path / "tri"),
                   "--output", str(tmp_path / "metrics.json")])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: ground truths: colour images read as grayscale: 1 of 2 (first: {gt})", *trimap_lines]
