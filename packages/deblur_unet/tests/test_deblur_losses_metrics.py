"""Charbonnier loss against hand-computed values, and the [-1, 1] → [0, 1] conversion the metrics see.

PSNR/SSIM themselves are shared.metrics, tested in shared/tests/test_metrics.py.
"""

import math

import pytest
import torch

from deblur_unet.data import to_unit_range
from deblur_unet.losses import CharbonnierLoss


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


def test_to_unit_range_maps_and_clamps():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    assert torch.equal(to_unit_range(x), torch.tensor([0.0, 0.5, 1.0, 1.0]))
