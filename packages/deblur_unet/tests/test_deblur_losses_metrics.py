"""Charbonnier loss, PSNR and SSIM against hand-computed values."""

import math

import pytest
import torch

from deblur_unet.losses import CharbonnierLoss
from deblur_unet.metrics import psnr, ssim, to_unit_range


def test_charbonnier_matches_hand_computation():
    x = torch.tensor([[0.0, 1.0], [0.5, -0.5]]).view(1, 1, 2, 2)
    y = torch.tensor([[0.0, 0.0], [0.5, 0.5]]).view(1, 1, 2, 2)
    eps = 0.1
    # diffs 0, 1, 0, -1 -> sqrt(d^2 + 0.01) = 0.1, sqrt(1.01), 0.1, sqrt(1.01)
    expected = (0.1 + math.sqrt(1.01) + 0.1 + math.sqrt(1.01)) / 4
    assert CharbonnierLoss(eps)(x, y).item() == pytest.approx(expected, rel=1e-6)


def test_charbonnier_of_identical_images_is_eps():
    x = torch.rand(2, 3, 8, 8)
    assert CharbonnierLoss(1e-3)(x, x).item() == pytest.approx(1e-3, rel=1e-5)


def test_psnr_hand_computed():
    target = torch.zeros(1, 3, 4, 4)
    prediction = torch.full((1, 3, 4, 4), 0.1)  # MSE = 0.01 -> 20 dB
    assert psnr(prediction, target).item() == pytest.approx(20.0, abs=1e-4)


def test_psnr_per_image_and_infinite_for_identical():
    a = torch.rand(2, 3, 8, 8)
    values = psnr(a, a)
    assert values.shape == (2,) and torch.isinf(values).all()


def test_ssim_of_identical_images_is_one():
    a = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-6)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.6
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the structure term is C2/C2 = 1
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_drops_with_noise_and_is_symmetric():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 32, 32)
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    assert ssim(a, noisy).item() < 0.9
    assert ssim(a, noisy).item() == pytest.approx(ssim(noisy, a).item(), abs=1e-6)


def test_to_unit_range_maps_and_clamps():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    assert torch.equal(to_unit_range(x), torch.tensor([0.0, 0.5, 1.0, 1.0]))
