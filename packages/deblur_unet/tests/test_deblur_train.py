"""The training loop in process: what it reports when some steps do not go through."""

import pytest
import torch

from deblur_unet import trainer
from deblur_unet.config import TrainConfig
from deblur_unet.losses import CharbonnierLoss


def test_train_loss_is_the_mean_over_the_steps_that_went_through(tmp_path, monkeypatch):
    training_losses: list[float] = []

    class NonFiniteOnSteps2And3(CharbonnierLoss):
        def forward(self, output, target):
            loss = super().forward(output, target)
            if not torch.is_grad_enabled():  # validation
                return loss
            training_losses.append(float(loss.detach()))
            return loss * float("nan") if len(training_losses) in (2, 3) else loss

    monkeypatch.setattr(trainer, "CharbonnierLoss", NonFiniteOnSteps2And3)
    cfg = TrainConfig(synthetic=True, synthetic_samples=8, batch_size=2, patch_size=32, val_patch_size=32,
                      base_ch=8, num_workers=0, epochs=1, tracker="none", sample_every=0, device="cpu",
                      checkpoint_dir=str(tmp_path / "ckpt"), output_dir=str(tmp_path / "out"))
    summary = trainer.train(cfg)

    assert len(training_losses) == 4 and summary["global_step"] == 2  # steps 2 and 3 were skipped
    expected = (training_losses[0] + training_losses[3]) / 2
    assert summary["last_metrics"]["train_loss"] == pytest.approx(expected, rel=1e-6)
