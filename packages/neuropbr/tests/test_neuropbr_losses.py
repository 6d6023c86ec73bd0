"""Each loss term against a hand-computed value."""

from __future__ import annotations

import math

import pytest
import torch

from neuropbr.losses import HybridLoss, gan_discriminator_loss, gan_generator_loss, normal_angle
from neuropbr.train_config import LossConfig
from neuropbr.utils.metrics import compute_metrics


def constant_maps(albedo: float, rough: float, metal: float, normal=(0.0, 0.0, 1.0), size: int = 16):
    n = torch.tensor(normal, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size)
    return {
        "albedo": torch.full((1, 3, size, size), albedo), "roughness": torch.full((1, 1, size, size), rough),
        "metallic": torch.full((1, 1, size, size), metal), "normal": torch.nn.functional.normalize(n, dim=1),
    }


def test_normal_angle_right_angle():
    p = constant_maps(0, 0, 0, normal=(1.0, 0.0, 0.0))["normal"]
    t = constant_maps(0, 0, 0, normal=(0.0, 0.0, 1.0))["normal"]
    assert float(normal_angle(p, t).mean()) == pytest.approx(math.pi / 2, abs=1e-4)
    assert float(normal_angle(t, t).mean()) == pytest.approx(0.0, abs=2e-3)


def test_gan_losses_hand_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # hinge D: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 0.5)/2 + (0 + 1.5)/2 = 1.0
    assert float(gan_discriminator_loss(real, fake, "hinge")) == pytest.approx(1.0)
    # hinge G: -mean(fake) = 0.75
    assert float(gan_generator_loss(fake, "hinge")) == pytest.approx(0.75)
    # BCE with logits, real 0 and fake 0 logits: log 2 each
    zero = torch.zeros(3)
    assert float(gan_discriminator_loss(zero, zero, "bce")) == pytest.approx(2 * math.log(2), rel=1e-5)
    probs = torch.full((3,), 0.25)
    assert float(gan_generator_loss(probs, "bce", outputs_are_probs=True)) == pytest.approx(-math.log(0.25), rel=1e-4)


def test_hybrid_loss_composition():
    cfg = LossConfig(w_l1=1.0, w_ssim=0.3, w_normal=0.5, w_gan=0.05, w_albedo=2.0, w_roughness=0.5,
                     w_metallic=1.0, w_normal_map=3.0)
    pred = constant_maps(0.5, 0.2, 0.0, normal=(1.0, 0.0, 0.0))
    target = constant_maps(0.3, 0.6, 1.0, normal=(0.0, 0.0, 1.0))
    fake = torch.full((1, 1, 4, 4), -0.4)
    total, parts = HybridLoss(cfg)(pred, target, fake)
    l1_normal = (1.0 + 0.0 + 1.0) / 3  # |(1,0,0) - (0,0,1)| per channel, averaged
    l1 = 2.0 * 0.2 + 0.5 * 0.4 + 1.0 * 1.0 + 3.0 * l1_normal
    s = (2 * 0.5 * 0.3 + 1e-4) / (0.25 + 0.09 + 1e-4)
    expected = 1.0 * l1 + 0.3 * 2.0 * (1 - s) + 0.5 * 3.0 * (math.pi / 2) + 0.05 * 0.4
    assert float(total) == pytest.approx(expected, rel=1e-4)
    assert float(parts["l1_roughness"]) == pytest.approx(0.4, rel=1e-5)
    assert float(parts["normal_angle_deg"]) == pytest.approx(90.0, abs=1e-2)
    assert float(parts["gan_g"]) == pytest.approx(0.4)
    only_l1, _ = HybridLoss(LossConfig(loss_type="l1_only"))(pred, target)
    assert float(only_l1) == pytest.approx(0.2 + 0.4 + 1.0 + l1_normal, rel=1e-5)


def test_metrics_values():
    pred = constant_maps(0.5, 0.5, 0.5)
    target = constant_maps(0.4, 0.5, 0.5)
    m = compute_metrics(pred, target)
    assert m["psnr_albedo"] == pytest.approx(20.0, abs=1e-3)  # mse 0.01
    assert m["mae_albedo"] == pytest.approx(0.1, abs=1e-6)
    assert m["psnr_roughness"] == pytest.approx(100.0)  # identical, capped
    assert m["normal_angle_mean"] == pytest.approx(0.0, abs=0.2)
    assert m["normal_within_11.25"] == pytest.approx(100.0)
