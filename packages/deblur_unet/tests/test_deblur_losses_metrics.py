"""Charbonnier loss against hand-computed values, and the [-1, 1] → [0, 1] conversion the metrics see.

PSNR/SSIM themselves are shared.metrics, tested in shared/tests/test_metrics.py.
"""

import math

import pytest
import torch

from deblur_unet.data import to_unit_range
from deblur_unet.losses import CharbonnierLoss, DeblurLoss


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


def test_frequency_term_matches_hand_computation():
    # A constant error c over a 2×2 image has one non-zero orthonormal FFT coefficient, the DC term
    # 4c / sqrt(4) = 2c; rfft2 gives 2×2 complex = 8 real numbers, so the mean absolute value is c / 4.
    x = torch.full((1, 1, 2, 2), 1.0)
    y = torch.zeros(1, 1, 2, 2)
    eps = 0.1
    assert DeblurLoss(eps, fft_weight=2.0)(x, y).item() == pytest.approx(math.sqrt(1.01) + 2.0 * 0.25, rel=1e-6)
    assert DeblurLoss(eps)(x, y).item() == pytest.approx(math.sqrt(1.01), rel=1e-6)  # weight 0: Charbonnier


def test_to_unit_range_maps_and_clamps():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    assert torch.equal(to_unit_range(x), torch.tensor([0.0, 0.5, 1.0, 1.0]))
