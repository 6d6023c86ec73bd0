"""Entry scripts end to end on tiny synthetic data: train, checkpoints, logs, exact resume, inference."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neuropbr import run_inference
from neuropbr import train as train_mod
from shared.checkpoint import load_checkpoint
from shared.images import read_image
from shared.sampler import EpochSampler
from shared.tracking import read_offline_wandb

PACKAGE_DIR = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
from train_config import get_quick_test_config


def get_config():
    cfg = get_quick_test_config()
    cfg.model.encoder_type = "unet"
    cfg.model.encoder_channels = [8, 16, 32, 64]
    cfg.model.transformer_dim = 32
    cfg.model.transformer_num_heads = 4
    cfg.model.transformer_depth = 1
    cfg.model.decoder_channels = [32, 16, 16, 16]
    cfg.model.discriminator_ndf = 8
    cfg.model.discriminator_n_layers = 2
    cfg.data.synthetic_num_samples = 5
    cfg.data.synthetic_image_size = 32
    cfg.data.num_workers = 0
    cfg.data.val_ratio = 0.2
    cfg.training.gan_start_epoch = 1
    cfg.training.log_every_n_steps = 1
    cfg.training.save_every_n_epochs = 1
    return cfg
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_script(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PACKAGE_DIR, capture_output=True, text=True,
                          timeout=timeout, env=_env())


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_config.py"
    path.write_text(TINY_CONFIG)
    return path


def _train_args(config: Path, ckpt: Path, epochs: int, *extra: str) -> list[str]:
    return ["train.py", "--config", str(config), "--synthetic", "--batch-size", "2", "--epochs", str(epochs),
            "--checkpoint-dir", str(ckpt), "--device", "cpu", "--deterministic", "--seed", "3", *extra]


@pytest.fixture
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def _generator_losses(out: str) -> list[str]:
    return re.findall(r"Epoch (\d+) Summary:\n  Generator Loss: (\S+)", out)


def _generator_loss(out: str, epoch: int) -> str:
    found = re.search(rf"Epoch {epoch} Summary:\n  Generator Loss: (\S+)", out)
    assert found, out[-2000:]
    return found.group(1)


def test_train_checkpoints_logs_and_exact_resume(tiny_config_file: Path, tmp_path: Path, capsys,
                                                 _restore_determinism):
    full, part = tmp_path / "full", tmp_path / "part"
    # In-process runs keep the suite fast; the last resume goes through the entry script.
    assert train_mod.main(_train_args(tiny_config_file, full, 2)[1:]) == 0
    full_out = capsys.readouterr().out
    assert "Epoch 2 Summary:" in full_out and "Generator Loss:" in full_out and "Discriminator Loss:" in full_out
    assert "[Validation] Epoch 2 - Loss:" in full_out and "Saved checkpoint:" in full_out
    assert "Saved best model:" in full_out
    # gan_start_epoch = 1: one epoch without the GAN, then it is on from (1-based) epoch 2.
    assert "GAN on from epoch 2" in full_out and "Discriminator Loss" not in full_out.split("Epoch 2 Summary")[0]
    for name in ("latest.pth", "best_model.pth", "checkpoint_epoch_0001.pth", "checkpoint_epoch_0002.pth",
                 "samples/epoch_0002.png"):
        assert (full / name).is_file(), name
    assert list((full / "logs").glob("events.out.tfevents.*"))
    # One validation sample: one row of 32-pixel cells (36 pixels with padding) under the column labels.
    assert read_image(full / "samples" / "epoch_0002.png").shape[0] > 36

    # The same run in three pieces (2 steps per epoch): a step budget that ends exactly on epoch 1's last
    # batch, before its end-of-epoch work; one that ends inside epoch 2; then the rest.
    assert train_mod.main(_train_args(tiny_config_file, part, 2, "--tracker", "none", "--max-steps", "2")[1:]) == 0
    state = load_checkpoint(part / "latest.pth")
    assert (state["epoch"], state["extra"]["batch_in_epoch"], state["global_step"]) == (0, 2, 2)
    capsys.readouterr()
    assert train_mod.main(["--resume", "auto", "--checkpoint-dir", str(part), "--max-steps", "3"]) == 0
    out = capsys.readouterr().out
    # Epoch 1 has no step left: its summary is the mean of the steps taken before the stop, not nan.
    assert "nan" not in out and "Epoch 1 Summary:" in out
    assert _generator_loss(out, 1) == _generator_loss(full_out, 1)
    state = load_checkpoint(part / "latest.pth")
    assert (state["epoch"], state["extra"]["batch_in_epoch"], state["global_step"]) == (1, 1, 3)
    proc = run_script(["train.py", "--resume", "auto", "--checkpoint-dir", str(part)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--resume auto: resuming" in proc.stderr
    a, b = load_checkpoint(full / "latest.pth"), load_checkpoint(part / "latest.pth")
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"] == 4
    for key, value in a["generator_state_dict"].items():
        assert torch.equal(value, b["generator_state_dict"][key]), key
    for key, value in a["discriminator_state_dict"].items():
        assert torch.equal(value, b["discriminator_state_dict"][key]), key
    assert isinstance(a["config"], dict) and a["config"]["data"]["synthetic"] is True

    # A fresh run must not overwrite an existing one.
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        train_mod.main(_train_args(tiny_config_file, full, 1)[1:])
    assert info.value.code == 2 and "holds another run (latest.pth)" in capsys.readouterr().err

    # Inference on a dataset sample and on a folder of three PNGs (in-process, same CLI).
    sample_out = tmp_path / "inf_sample"
    assert run_inference.main(["--checkpoint", str(full / "best_model.pth"), "--sample-idx", "1",
                               "--out-dir", str(sample_out), "--device", "cpu"]) == 0
    for name in ("albedo", "roughness", "metallic", "normal", "input_0", "input_2", "gt_normal"):
        assert (sample_out / f"{name}.png").is_file(), name
    views = tmp_path / "views"
    views.mkdir()
    for i in range(3):
        (views / f"view_{i}.png").write_bytes((sample_out / f"input_{i}.png").read_bytes())
    folder_out = tmp_path / "inf_folder"
    assert run_inference.main(["--checkpoint", str(full / "latest.pth"), "--input-dir", str(views),
                               "--out-dir", str(folder_out), "--device", "cpu", "--tile"]) == 0
    normal = torch.from_numpy(read_image(folder_out / "normal.png", dtype="float32")) * 2 - 1
    assert normal.shape == (32, 32, 3)
    assert torch.allclose(normal.norm(dim=-1), torch.ones(32, 32), atol=0.02)
    assert read_image(folder_out / "roughness.png", mode="L").shape == (32, 32)


def test_wandb_run_charts_train_and_validation_at_the_global_step(tiny_config_file: Path, tmp_path: Path,
                                                                  monkeypatch, capsys):
    """Validation and images at the global step (W&B drops records whose step goes back), and train/*
    at least once per epoch even when an epoch is shorter than log_every_n_steps."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tmp_path / "rare_logs.py"
    config.write_text(TINY_CONFIG.replace("log_every_n_steps = 1", "log_every_n_steps = 100"))
    ckpt = tmp_path / "ck"
    assert train_mod.main(_train_args(config, ckpt, 2, "--tracker", "wandb")[1:]) == 0
    history = read_offline_wandb(next((ckpt / "logs" / "wandb").glob("offline-run-*"))).history

    def steps(key: str) -> list[int]:  # an image's record holds key/width, key/path, ...
        return [h["global_step"] for h in history if any(k == key or k.startswith(f"{key}/") for k in h)]

    # 2 steps per epoch: epoch 1 ends at step 2, epoch 2 at step 4.
    assert steps("val/loss") == steps("val/psnr_albedo") == [2, 4]
    assert steps("val/comparison") == steps("epoch/G_loss") == [2, 4]
    assert [h["epoch"] for h in history if "epoch" in h] == [1, 2]
    assert steps("train/G_loss") == steps("train/lr_d") == [2, 4]
    assert steps("train/D_loss") == [4]  # the GAN starts in epoch 2
    # Exactly the train/* names the README lists.
    logged = {k for h in history for k in h if k.startswith("train/")}
    assert logged == {f"train/{k}" for k in ("G_loss", "D_loss", "gan_g", "l1_albedo", "l1_roughness", "l1_metallic",
                                             "l1_normal", "ssim_albedo", "normal_angle_deg", "grad_norm_g",
                                             "lr_g", "lr_d")}


def test_train_loader_under_two_ranks_resumes_at_the_next_batch(tiny_config_file: Path, tmp_path: Path):
    """Under torchrun too, a resumed epoch continues with this rank's next batch (not the epoch's first)."""
    args = train_mod.build_arg_parser().parse_args(_train_args(tiny_config_file, tmp_path, 1, "--synthetic-samples",
                                                               "12", "--tracker", "none")[1:])
    trainer = train_mod.Trainer(train_mod.resolve_config(args))
    assert len(trainer.train_idx) == 10
    shares = []
    for rank in (0, 1):
        trainer.sampler = EpochSampler(trainer.train_idx, seed=3, rank=rank, world_size=2)
        whole = list(trainer.train_loader(epoch=1).batch_sampler)
        assert len(whole) == 2 and all(len(batch) == 2 for batch in whole)  # 5 samples per rank, batch 2
        assert list(trainer.train_loader(epoch=1, skip=1).batch_sampler) == whole[1:]
        assert list(trainer.train_loader(epoch=1, skip=2).batch_sampler) == []
        shares.append({i for batch in whole for i in batch})
    assert not shares[0] & shares[1]


# The spec's "Export for Inference" and "Inline Inference Example", verbatim but for `import torch`,
# the input and the device (`.eval().cuda()` -> `.eval()`).
SPEC_SNIPPETS = """
import torch
inputs = torch.randn(1, 3, 3, 32, 32)

ckpt = torch.load('checkpoints/best_model.pth')
state = ckpt['generator_state_dict']
cfg = ckpt['config']
torch.save({'config': cfg, 'model_state_dict': state}, 'model_inference.pth')

from train import MultiViewPBRGenerator
ckpt = torch.load('model_inference.pth')
model = MultiViewPBRGenerator(ckpt['config']).eval()
model.load_state_dict(ckpt['model_state_dict'])
with torch.no_grad():
    outputs = model(inputs)

print(sorted((k, tuple(v.shape)) for k, v in outputs.items()))
"""


def test_spec_export_and_inline_inference_snippets(tmp_path: Path, monkeypatch):
    """A model trained with --pretrained loads on a machine that never saw that file."""
    import torchvision

    config = tmp_path / "resnet_config.py"
    config.write_text(TINY_CONFIG.replace('"unet"', '"resnet"').replace("[32, 16, 16, 16]", "[32, 16, 16, 16, 16]")
                      .replace("save_every_n_epochs = 1", "save_every_n_epochs = 0"))
    weights = tmp_path / "resnet18_imagenet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    ckpt = tmp_path / "checkpoints"
    assert train_mod.main(_train_args(config, ckpt, 1, "--tracker", "none", "--pretrained", str(weights),
                                      "--max-steps-per-epoch", "1")[1:]) == 0
    weights.unlink()
    # In-process (a subprocess costs seconds of imports): from the run's folder, with the package folder's
    # train.py importable as the spec's `from train import ...` expects.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(PACKAGE_DIR))
    other_train = sys.modules.pop("train", None)  # another package's train.py imported by an earlier test
    namespace: dict = {}
    try:
        exec(SPEC_SNIPPETS.replace("print(", "result = ("), namespace)
    finally:
        sys.modules.pop("train", None)
        if other_train is not None:
            sys.modules["train"] = other_train
    assert namespace["model"].config.encoder_type == "resnet"
    assert ("normal", (1, 3, 32, 32)) in namespace["result"]
    # The exported file also works with run_inference, still without the weights file.
    out = tmp_path / "inf"
    assert run_inference.main(["--checkpoint", "model_inference.pth", "--sample-idx", "0", "--out-dir", str(out),
                               "--device", "cpu"]) == 0
    assert (out / "metallic.png").is_file()
    # Resuming needs no weights file either, even from a checkpoint whose stored config still names one.
    state = load_checkpoint(ckpt / "latest.pth")
    assert state["config"]["model"]["pretrained_path"] is None
    state["config"]["model"]["pretrained_path"] = str(weights)
    args = train_mod.build_arg_parser().parse_args(["--resume", str(ckpt / "latest.pth")])
    assert train_mod.resolve_config(args, state).model.pretrained_path is None


def test_sample_grid_columns_are_labelled():
    import numpy as np

    from shared.images import make_grid

    rows = [[torch.full((3, 24, 24), 0.5) for _ in train_mod.GRID_COLUMNS]] * 2
    grid, plain = make_grid(rows, labels=train_mod.GRID_COLUMNS), make_grid(rows)
    header = grid[: grid.shape[0] - plain.shape[0]]
    assert header.shape[0] >= 11 and np.array_equal(grid[header.shape[0]:], plain)
    step = (plain.shape[1] - 2) // len(train_mod.GRID_COLUMNS)
    for j in range(len(train_mod.GRID_COLUMNS)):  # text (dark pixels) above every column
        assert (header[:, 2 + j * step : (j + 1) * step] < 128).any(), train_mod.GRID_COLUMNS[j]


def test_lightweight_has_no_discriminator(tmp_path: Path):
    args = train_mod.build_arg_parser().parse_args(
        ["--config", "lightweight", "--synthetic", "--image-size", "32", "--synthetic-samples", "3",
         "--epochs", "1", "--batch-size", "2", "--checkpoint-dir", str(tmp_path), "--tracker", "none",
         "--device", "cpu"])
    cfg = train_mod.resolve_config(args)
    # Same preset, small enough for a CPU test (the GAN switch is what is under test).
    cfg.model.encoder_type, cfg.model.encoder_channels = "unet", [8, 16, 32]
    cfg.model.transformer_dim, cfg.model.transformer_num_heads, cfg.model.transformer_depth = 16, 2, 1
    cfg.data.num_workers = 0
    trainer = train_mod.Trainer(cfg, max_steps_per_epoch=1)
    assert trainer.discriminator is None and trainer.opt_d is None
    assert trainer.fit() == 0
    state = load_checkpoint(tmp_path / "latest.pth")
    assert "discriminator" not in state["state"] and "discriminator_state_dict" not in state


@pytest.mark.parametrize("argv, message", [
    (["--input-dir", "{tmp}/missing", "--output-dir", "{tmp}"], "input folder not found"),
    (["--input-dir", "{tmp}", "--output-dir", "{tmp}"], "render_metadata.json not found"),
    (["--synthetic", "--config", "nope"], "config not found"),
    (["--resume", "{tmp}/none.pth"], "checkpoint not found"),
    (["--synthetic", "--device", "cuda"] if not torch.cuda.is_available() else ["--synthetic", "--device", "mps"],
     "not available"),
])
def test_bad_inputs_give_one_line_errors(argv, message, tmp_path: Path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--checkpoint-dir", str(tmp_path / "ck")]
    with pytest.raises(SystemExit) as info:
        train_mod.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ck" / "latest.pth").exists()


def test_inference_bad_inputs(tmp_path: Path, capsys):
    empty = tmp_path / "two"
    empty.mkdir()
    with pytest.raises(SystemExit) as info:
        run_inference.main(["--checkpoint", str(tmp_path / "missing.pth"), "--input-dir", str(empty)])
    assert info.value.code == 2 and "checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_test_preset_through_entry_script(tmp_path: Path):
    """The issue's command: quick_test preset, synthetic, batch 2 (image size cut for CPU)."""
    proc = run_script(["train.py", "--config", "quick_test", "--synthetic", "--batch-size", "2", "--image-size", "32",
                       "--synthetic-samples", "4", "--epochs", "2", "--checkpoint-dir", str(tmp_path / "ck"),
                       "--device", "cpu"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "D_loss" in proc.stdout and (tmp_path / "ck" / "best_model.pth").is_file()


@pytest.mark.slow
def test_sigterm_saves_latest_and_resumes_mid_epoch(tiny_config_file: Path, tmp_path: Path):
    ckpt = tmp_path / "ck"
    args = _train_args(tiny_config_file, ckpt, 50, "--tracker", "none", "--synthetic-samples", "40")
    proc = subprocess.Popen([sys.executable, *args], cwd=PACKAGE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpt / "latest.pth").exists():
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    state = load_checkpoint(ckpt / "latest.pth")
    assert state["extra"]["batch_in_epoch"] >= 1
    proc = run_script(["train.py", "--resume", str(ckpt / "latest.pth"), "--epochs", str(state["epoch"] + 1),
                       "--tracker", "none"])
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_budget_stop_mid_epoch_resumes_at_the_next_batch(tiny_config_file: Path, tmp_path: Path):
    """Two gloo ranks, 2 steps per rank and epoch: stopped after step 3 (epoch 2, batch 1), the resumed
    run takes the one step left, not the whole epoch again."""
    ckpt = tmp_path / "ck"

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        args = _train_args(tiny_config_file, ckpt, 2, "--tracker", "none", "--synthetic-samples", "12", *extra)
        return run_script(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args], timeout=600)

    proc = torchrun("--max-steps", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(ckpt / "latest.pth")
    assert (state["epoch"], state["extra"]["batch_in_epoch"], state["global_step"]) == (1, 1, 3)
    proc = torchrun("--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(ckpt / "latest.pth")
    assert (state["epoch"], state["global_step"]) == (2, 4)


def _layout_with_conversions(root: Path) -> tuple[Path, Path]:
    """Two samples of two materials; sample 0's first view is grayscale and material 0's roughness RGBA."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    inp, out = root / "input", root / "output"
    for i in range(2):
        (inp / "clean" / f"sample_{i:04d}").mkdir(parents=True)
        for view in ("0.png", "1.png", "2.png"):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(inp / "clean" / f"sample_{i:04d}" / view)
        mat = out / f"material_{i}"
        mat.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(mat / "albedo.png")
        for name in ("roughness.png", "metallic.png"):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(mat / name)
        Image.fromarray(np.full((32, 32, 3), (128, 128, 255), np.uint8)).save(mat / "normal.png")
    Image.open(inp / "clean" / "sample_0000" / "0.png").convert("L").save(inp / "clean" / "sample_0000" / "0.png")
    Image.open(out / "material_0" / "roughness.png").convert("RGBA").save(out / "material_0" / "roughness.png")
    (inp / "render_metadata.json").write_text(json.dumps({f"sample_{i:04d}": f"material_{i}" for i in range(2)}))
    return inp, out


def test_conversions_are_said_once_per_training_and_inference(tiny_config_file: Path, tmp_path: Path, capsys):
    """Views, albedo and normal read as RGB, roughness and metallic as grayscale: one line per kind and
    role, with the count and first file, once per teacher run, student run and inference."""
    from neuropbr.shards import ShardWriter
    from neuropbr.student.config import StudentConfig
    from neuropbr.student.train import build_dataset as build_student_dataset
    from neuropbr.student.train import build_parser as student_parser

    inp, out = _layout_with_conversions(tmp_path / "data")
    view, rough = inp / "clean" / "sample_0000" / "0.png", out / "material_0" / "roughness.png"

    def notes() -> list[str]:
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")
                and line.split(":")[1].strip() in ("views", "albedo", "roughness", "metallic", "normal")]

    def expected(views: int, maps: int) -> list[str]:
        return [f"note: views: grayscale images read as RGB: 1 of {views} (first: {view})",
                f"note: roughness: colour images read as grayscale: 1 of {maps} (first: {rough})",
                f"note: roughness: alpha channel dropped: 1 of {maps} (first: {rough})"]

    args = train_mod.build_arg_parser().parse_args(
        ["--config", str(tiny_config_file), "--input-dir", str(inp), "--output-dir", str(out), "--image-size", "32",
         "--checkpoint-dir", str(tmp_path / "ck"), "--device", "cpu", "--tracker", "none"])
    capsys.readouterr()
    trainer = train_mod.Trainer(train_mod.resolve_config(args))
    assert notes() == expected(6, 2)

    checkpoint = tmp_path / "teacher.pth"
    torch.save({"config": trainer.cfg.to_dict(), "model_state_dict": trainer.generator.state_dict()}, checkpoint)
    assert run_inference.main(["--checkpoint", str(checkpoint), "--sample-idx", "0", "--data-input-dir", str(inp),
                               "--data-output-dir", str(out), "--out-dir", str(tmp_path / "a"), "--device", "cpu"]) == 0
    assert notes() == expected(3, 1)  # the files of the one sample read
    assert run_inference.main(["--checkpoint", str(checkpoint), "--input-dir", str(view.parent),
                               "--out-dir", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert notes() == expected(3, 1)[:1]

    cfg = StudentConfig()
    cfg.data.image_size, cfg.data.output_size = 32, 64
    writer = ShardWriter(tmp_path / "shards", ["clean/sample_0000", "clean/sample_0001"], 8, 32)
    writer.write(0, {"albedo": torch.rand(2, 3, 32, 32), "roughness": torch.rand(2, 1, 32, 32),
                     "metallic": torch.rand(2, 1, 32, 32), "normal": torch.nn.functional.normalize(
                         torch.randn(2, 3, 32, 32), dim=1)})
    build_student_dataset(cfg, student_parser().parse_args(
        ["--input-dir", str(inp), "--output-dir", str(out), "--shards-dir", str(tmp_path / "shards")]))
    assert notes() == expected(6, 2)
