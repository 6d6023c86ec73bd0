"""Entry scripts of the student half: errors, resume equality, teacher_infer, and the full chain (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PACKAGE_DIR, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_student_train_requires_both_dirs(tmp_path):
    proc = _run("student/train.py", "--config", "configs/mobilenetv3_512.py", "--shards-dir", str(tmp_path),
                "--input-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ck"), "--device", "cpu")
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "--input-dir and --output-dir are both required" in line
    assert "Traceback" not in proc.stderr and not (tmp_path / "ck").exists()


def _teacher_checkpoint(path: Path, tiny_config) -> Path:
    from neuropbr.models.generator import MultiViewPBRGenerator

    cfg = tiny_config()
    cfg.data.image_size = 32
    torch.manual_seed(0)
    torch.save({"config": cfg.to_dict(), "model_state_dict": MultiViewPBRGenerator(cfg).state_dict()}, path)
    return path


def test_teacher_infer_synthetic_shards_resume(tmp_path, tiny_config, capsys):
    from neuropbr.shards import ShardIndex
    from neuropbr.student.config import StudentConfig
    from neuropbr.student.data import SyntheticStudentDataset
    from neuropbr.teacher_infer import run

    ckpt = _teacher_checkpoint(tmp_path / "teacher.pth", tiny_config)
    args = ["--checkpoint", str(ckpt), "--synthetic", "--synthetic-samples", "2", "--synthetic-size", "32",
            "--shards-dir", str(tmp_path / "shards"), "--shard-output-size", "16", "--shard-size", "3", "--device", "cpu"]
    first = run(args)
    assert (first["shards"], first["written"], first["samples"]) == (2, 2, 4)  # clean + dirty of 2 materials
    index = ShardIndex(tmp_path / "shards")
    assert index.complete and index.output_size == 16
    maps = index["dirty/sample_0001"]
    assert maps["albedo"].shape == (3, 16, 16) and maps["roughness"].shape == (1, 16, 16)
    assert torch.allclose(maps["normal"].norm(dim=0), torch.ones(16, 16), atol=1e-2)
    assert run(args)["skipped"] == 2  # resumable: complete shards are not redone
    cfg = StudentConfig()
    cfg.model.sr_scale, cfg.data.image_size, cfg.data.output_size, cfg.data.render_curriculum = 2, 32, 64, 1
    ds = SyntheticStudentDataset(cfg, num_samples=2, seed=0, shards_dir=tmp_path / "shards")
    assert ds[3][2].shape == (8, 64, 64)  # teacher maps found by key and resized to output_size


def test_teacher_infer_rejects_student_checkpoint(tmp_path):
    from neuropbr.student.config import StudentConfig
    from neuropbr.teacher_infer import run
    from shared.checkpoint import CheckpointError, save_checkpoint

    save_checkpoint(tmp_path / "s.pth", {"kind": "neuropbr_student", "config": StudentConfig().to_dict(),
                                         "model_state_dict": {}})
    with pytest.raises(CheckpointError, match="student checkpoint"):
        run(["--checkpoint", str(tmp_path / "s.pth"), "--synthetic", "--shards-dir", str(tmp_path / "x")])


def _train_args(ckpt_dir: Path, epochs: int, *extra: str) -> list[str]:
    return ["student/train.py", "--config", "configs/convattn_student.py", "--synthetic", "--synthetic-samples", "3",
            "--image-size", "64", "--epochs", str(epochs), "--batch-size", "1", "--max-steps-per-epoch", "2",
            "--device", "cpu", "--num-workers", "0", "--tracker", "none", "--deterministic",
            "--checkpoint-dir", str(ckpt_dir), *extra]


@pytest.mark.slow
def test_student_resume_equals_uninterrupted(tmp_path):
    full = _run(*_train_args(tmp_path / "full", 2))
    assert full.returncode == 0, full.stderr[-2000:]
    half = _run(*_train_args(tmp_path / "half", 1))
    assert half.returncode == 0, half.stderr[-2000:]
    resumed = _run(*_train_args(tmp_path / "half", 2, "--resume", str(tmp_path / "half" / "latest.pth")))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "full" / "latest.pth", weights_only=True)["state"]["model"]
    b = torch.load(tmp_path / "half" / "latest.pth", weights_only=True)["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = _run(*_train_args(tmp_path / "half", 2))  # a fresh run must not overwrite an existing run
    assert again.returncode == 2 and "holds another run (latest.pth)" in _error_line(again)


@pytest.mark.slow
def test_full_chain_synthetic(tmp_path, tiny_config):
    """teacher → shards → each student config a few steps → .mlpackage (fp16, palettized) → maps at 2048."""
    pytest.importorskip("coremltools")
    from PIL import Image

    from neuropbr.utils.synthetic import make_sample
    from shared.images import save_image

    teacher = _teacher_checkpoint(tmp_path / "teacher.pth", tiny_config)
    shards = tmp_path / "shards"
    proc = _run("teacher_infer.py", "--checkpoint", str(teacher), "--synthetic", "--synthetic-samples", "3",
                "--synthetic-size", "32", "--shards-dir", str(shards), "--shard-output-size", "64", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for config in ("mobilenetv3_512", "convattn_student", "mobilenetv3_2048"):
        ck = tmp_path / config
        proc = _run("student/train.py", "--config", f"configs/{config}.py", "--synthetic", "--synthetic-samples", "3",
                    "--shards-dir", str(shards), "--image-size", "32", "--epochs", "1", "--batch-size", "2",
                    "--max-steps-per-epoch", "1", "--device", "cpu", "--num-workers", "0",
                    "--tracker", "tensorboard", "--checkpoint-dir", str(ck))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (ck / "best_student.pth").is_file() and list((ck / "logs").iterdir())
    student = tmp_path / "mobilenetv3_512" / "best_student.pth"
    for extra, name in (([], "fp16"), (["--palettization"], "pal")):
        proc = _run("coreml/converter.py", str(student), "--output", str(tmp_path / f"{name}.mlpackage"), *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (tmp_path / f"{name}.mlpackage" / "Manifest.json").is_file()
    views, _ = make_sample(5, 80)
    for i in range(3):
        save_image(tmp_path / "views" / f"{i}.png", views[i])
    if sys.platform != "darwin":
        proc = _run("coreml/run_inference.py", str(tmp_path / "fp16.mlpackage"), "--input", str(tmp_path / "views"),
                    "--output", str(tmp_path / "out"))
        assert proc.returncode == 2 and "needs macOS" in _error_line(proc)
    proc = _run("coreml/run_inference.py", str(tmp_path / "fp16.mlpackage"), "--input", str(tmp_path / "views"),
                "--output", str(tmp_path / "out"), "--reference", str(student))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, mode in (("albedo", "RGB"), ("normal", "RGB"), ("roughness", "L"), ("metallic", "L")):
        with Image.open(tmp_path / "out" / f"{name}.png") as image:
            assert image.size == (2048, 2048) and image.mode == mode


def test_run_inference_needs_three_images(tmp_path):
    from neuropbr.coreml.run_inference import first_three
    from shared.errors import DataError

    (tmp_path / "v").mkdir()
    from shared.images import save_image

    save_image(tmp_path / "v" / "a.png", torch.rand(3, 8, 8))
    with pytest.raises(DataError, match="at least 3 images"):
        first_three(tmp_path / "v")


@pytest.fixture
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def test_student_logs_at_the_global_step_and_a_step_budget_resumes_exactly(tmp_path, monkeypatch,
                                                                          _restore_determinism):
    """Every record at the global step (W&B drops one whose step goes back, as epoch-numbered validation
    did), train/* at least once per epoch; a --max-steps stop inside an epoch exits 0 and --resume auto
    continues to the weights of an uninterrupted run."""
    import shared.training
    from neuropbr.student.train import build_parser, train
    from shared.tracking import Tracker

    class Recorder(Tracker):
        def log_metrics(self, metrics, step):
            logged.append((step, dict(metrics)))

        def log_image(self, name, image, step):
            logged.append((step, {name: image}))

    logged: list = []
    monkeypatch.setattr(shared.training, "create_tracker", lambda *args, **kwargs: Recorder())
    monkeypatch.chdir(PACKAGE_DIR)

    def args(ckpt: Path, *extra: str):
        return build_parser().parse_args(_train_args(ckpt, 2, *extra)[1:])

    def steps(key: str) -> list[int]:
        return [step for step, metrics in logged if key in metrics]

    assert train(args(tmp_path / "full")) == 0
    # 2 steps per epoch, log_every_n_steps 10: each epoch still charts its last step.
    assert steps("val/loss") == steps("epoch") == steps("train/loss") == [2, 4]
    assert steps("samples") == [4]
    # Rows renders | student | truth (no shards), 64-pixel cells, a first column naming the rows and a
    # header naming the columns.
    grid = next(metrics["samples"] for _, metrics in logged if "samples" in metrics)
    assert grid.shape[1] == 5 * (64 + 2) + 2 and grid.shape[0] > 3 * (64 + 2) + 2

    assert train(args(tmp_path / "cut", "--max-steps", "3")) == 0
    state = torch.load(tmp_path / "cut" / "latest.pth", weights_only=True)
    assert (state["epoch"], state["extra"]["batches_done"], state["global_step"]) == (1, 1, 3)
    assert train(args(tmp_path / "cut", "--resume", "auto")) == 0
    a = torch.load(tmp_path / "full" / "latest.pth", weights_only=True)
    b = torch.load(tmp_path / "cut" / "latest.pth", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    assert all(torch.equal(a["state"]["model"][k], b["state"]["model"][k]) for k in a["state"]["model"])


@pytest.mark.slow
def test_preempted_mid_epoch_resumes_exactly(tmp_path, monkeypatch, _restore_determinism):
    """SIGTERM during the first step saves latest.pth inside the epoch (exit 75); resuming gives the
    same weights as an uninterrupted run."""
    import signal

    from neuropbr.student.losses import DistillationLoss
    from neuropbr.student.train import build_parser, train
    from shared.preemption import EXIT_PREEMPTED

    monkeypatch.chdir(PACKAGE_DIR)

    def args(ckpt: Path, *extra: str):
        return build_parser().parse_args(_train_args(ckpt, 1, *extra)[1:])

    assert train(args(tmp_path / "full")) == 0
    calls = {"n": 0}
    forward = DistillationLoss.forward

    def sigterm_in_first_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, *a, **k)

    monkeypatch.setattr(DistillationLoss, "forward", sigterm_in_first_step)
    assert train(args(tmp_path / "cut")) == EXIT_PREEMPTED
    state = torch.load(tmp_path / "cut" / "latest.pth", weights_only=True)
    assert state["epoch"] == 0 and state["extra"]["batches_done"] == 1
    assert train(args(tmp_path / "cut", "--resume", str(tmp_path / "cut" / "latest.pth"))) == 0
    a = torch.load(tmp_path / "full" / "latest.pth", weights_only=True)["state"]["model"]
    b = torch.load(tmp_path / "cut" / "latest.pth", weights_only=True)["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_infer_on_dataset_layout(tmp_path, tiny_config):
    """--data-root with the spec's input/ + output/ layout: every clean and dirty sample gets a prediction
    and the student loader finds them."""
    import importlib.util

    from neuropbr.student.config import StudentConfig
    from neuropbr.student.data import StudentDataset
    from neuropbr.teacher_infer import run

    spec = importlib.util.spec_from_file_location("_student_data_tests", Path(__file__).with_name("test_neuropbr_student_data.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    inp, out = helpers.make_layout(tmp_path / "data", n=2, size=40)
    ckpt = _teacher_checkpoint(tmp_path / "teacher.pth", tiny_config)
    summary = run(["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data"), "--shards-dir",
                   str(tmp_path / "shards"), "--shard-size", "8", "--device", "cpu"])
    assert summary["samples"] == 4 and summary["written"] == 1
    cfg = StudentConfig()
    cfg.data.image_size, cfg.data.output_size, cfg.data.render_curriculum = 32, 64, 2
    views, target, teacher = StudentDataset(cfg, inp, out, tmp_path / "shards")[0]
    assert teacher.shape == target.shape == (8, 64, 64)
