"""The training loop in process: what it reports when some steps do not go through."""

import re
from pathlib import Path

import pytest
import torch

from deblur_unet import trainer
from deblur_unet.config import TrainConfig
from deblur_unet.losses import DeblurLoss


def test_train_loss_is_the_mean_over_the_steps_that_went_through(tmp_path, monkeypatch):
    training_losses: list[float] = []

    class NonFiniteOnSteps2And3(DeblurLoss):
        def forward(self, output, target):
            loss = super().forward(output, target)
            if not torch.is_grad_enabled():  # validation
                return loss
            training_losses.append(float(loss.detach()))
            return loss * float("nan") if len(training_losses) in (2, 3) else loss

    monkeypatch.setattr(trainer, "DeblurLoss", NonFiniteOnSteps2And3)
    cfg = TrainConfig(synthetic=True, synthetic_samples=8, batch_size=2, patch_size=32, val_patch_size=32,
                      base_ch=8, num_workers=0, epochs=1, tracker="none", sample_every=0, device="cpu",
                      checkpoint_dir=str(tmp_path / "ckpt"), output_dir=str(tmp_path / "out"))
    summary = trainer.train(cfg)

    assert len(training_losses) == 4 and summary["global_step"] == 2  # steps 2 and 3 were skipped
    expected = (training_losses[0] + training_losses[3]) / 2
    assert summary["last_metrics"]["train_loss"] == pytest.approx(expected, rel=1e-6)


def _scalars(log_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events_file in sorted(log_dir.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(events_file.parent), size_guidance={"scalars": 0}).Reload()
        if tag in events.Tags()["scalars"]:
            values.update({e.step: e.value for e in events.Scalars(tag)})
    return values


def _tiny(tmp_path, **overrides):
    settings = dict(synthetic=True, synthetic_samples=8, batch_size=2, patch_size=32, base_ch=8, num_workers=0,
                    epochs=1, tracker="tensorboard", sample_every=0, device="cpu", patience=0,
                    checkpoint_dir=str(tmp_path / "ckpt"), output_dir=str(tmp_path / "out"))
    return TrainConfig(**{**settings, **overrides})


def _readme_logged(kind: str) -> set[str]:
    """The names the README's "What is logged" table gives for ``kind`` (scalar, image)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("### What is logged", 1)[1].split("\n\n")[2]
    names = set()
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        if cells[1] == kind:
            names.update(re.findall(r"`([^`]+)`", cells[0]))
    return names


def test_validation_logs_the_blurry_inputs_psnr_beside_the_models(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deblur_unet.data import SyntheticDeblurDataset, to_unit_range
    from shared.metrics import psnr, ssim

    summary = trainer.train(_tiny(tmp_path, sample_every=1))

    # The validation set the trainer builds for --synthetic: a quarter of the samples, at the patch size.
    val = SyntheticDeblurDataset(2, 32, training=False, seed=42)
    blur = to_unit_range(torch.stack([val[i][0] for i in range(len(val))]))
    sharp = to_unit_range(torch.stack([val[i][1] for i in range(len(val))]))
    expected_psnr, expected_ssim = float(psnr(blur, sharp).mean()), float(ssim(blur, sharp).mean())
    step = summary["global_step"]
    logged = tmp_path / "out"
    assert _scalars(logged, "val/psnr_input")[step] == pytest.approx(expected_psnr, abs=1e-3)
    assert _scalars(logged, "val/ssim_input")[step] == pytest.approx(expected_ssim, abs=1e-4)
    assert _scalars(logged, "val/psnr")[step] == pytest.approx(summary["last_metrics"]["psnr"], abs=1e-3)
    assert f"(input {expected_psnr:.2f})" in capsys.readouterr().err
    # The README lists exactly what the run logged.
    [events_file] = (tmp_path / "out").rglob("events.out.tfevents.*")
    tags = EventAccumulator(str(events_file.parent), size_guidance={"images": 0}).Reload().Tags()
    assert set(tags["scalars"]) == _readme_logged("scalar")
    assert set(tags["images"]) == _readme_logged("image") == {"samples"}


def test_a_budget_stop_validates_and_writes_best(tmp_path, capsys):
    from shared.checkpoint import load_checkpoint

    # 4 steps per epoch; the budget ends the run after 2, before any end-of-epoch validation.
    cfg = _tiny(tmp_path, max_steps=2)
    with pytest.raises(SystemExit) as stopped:
        trainer.train(cfg)
    assert stopped.value.code == 0
    best = load_checkpoint(tmp_path / "ckpt" / "best.pth")
    latest = load_checkpoint(tmp_path / "ckpt" / "latest.pth")
    assert best["global_step"] == latest["global_step"] == 2
    assert torch.equal(best["state"]["model"]["final.weight"], latest["state"]["model"]["final.weight"])
    assert best["best_metric"] == latest["best_metric"] is not None
    assert set(_scalars(tmp_path / "out", "val/psnr_input")) == {2}
    assert "at the stop: val_loss" in capsys.readouterr().err


def test_zero_init_with_residual_starts_at_the_identity():
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        identity = TrainConfig(synthetic=True, base_ch=8, residual=True, zero_init=True)
        assert torch.equal(trainer.build_model(identity)(x), x)
        random_head = TrainConfig(synthetic=True, base_ch=8, residual=True, zero_init=False)
        assert not torch.equal(trainer.build_model(random_head)(x), x)


def test_lr_factor_holds_then_falls_along_a_half_cosine():
    # 10-minute budget, last half decayed: flat to minute 5, cos-halfway (0.5) at 7.5, zero at 10.
    assert trainer.lr_factor(5.0, 10.0, 0.5) == 1.0
    assert trainer.lr_factor(7.5, 10.0, 0.5) == pytest.approx(0.5)
    assert trainer.lr_factor(10.0, 10.0, 0.5) == pytest.approx(0.0)
    assert trainer.lr_factor(12.0, 10.0, 0.5) == pytest.approx(0.0)  # a late last step stays at zero
    assert trainer.lr_factor(9.0, 10.0, 0.0) == 1.0  # off
    assert trainer.lr_factor(9.0, None, 0.5) == 1.0  # no time budget


def test_lr_decay_needs_a_time_budget():
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="--max-minutes"):
        TrainConfig(synthetic=True, lr_decay_fraction=0.3).validate()
    TrainConfig(synthetic=True, lr_decay_fraction=0.3, max_minutes=1.0).validate()


def test_every_periodic_checkpoint_is_kept_unless_keep_last(tmp_path):
    from deblur_unet.config import parse_config
    from shared.errors import ConfigError

    # One step per epoch; a periodic file after each of the 4 epochs, as the spec keeps them all.
    trainer.train(_tiny(tmp_path, synthetic_samples=2, epochs=4, save_every=1, tracker="none"))
    kept = sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint_epoch_*.pth"))
    assert kept == [f"checkpoint_epoch_{epoch:04d}.pth" for epoch in (1, 2, 3, 4)]
    assert parse_config(["--synthetic"]).keep_last == 0
    assert parse_config(["--synthetic", "--keep-last", "2"]).keep_last == 2
    with pytest.raises(ConfigError, match="--keep-last"):
        parse_config(["--synthetic", "--keep-last", "-1"])


def test_conversions_are_said_once_at_training_start(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from shared.images import save_image

    rng = np.random.default_rng(0)
    for sub in ("blur", "sharp"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / "data" / "sharp" / f"{name}.png")
        Image.fromarray(rgb[..., 0]).save(tmp_path / "data" / "blur" / f"{name}.png")  # grayscale
    save_image(tmp_path / "data" / "sharp" / "d.png", rng.random((32, 32, 3)), bit_depth=16)
    trainer.train(_tiny(tmp_path, synthetic=False, data_dir=str(tmp_path / "data"), patch_size=16,
                        val_patch_size=16, val_fraction=0.25, tracker="none", batch_size=4))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    grayscale = [line for line in notes if "grayscale" in line]
    assert len(grayscale) == 1 and "4 of 8" in grayscale[0] and f"{Path('blur')}" in grayscale[0], notes
    assert not any("16-bit" in line for line in notes), notes  # 16-bit files are read at full precision
