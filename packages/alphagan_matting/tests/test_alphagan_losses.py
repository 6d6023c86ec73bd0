"""Losses and metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alphagan_matting.losses import (
    alpha_loss,
    composition_loss,
    connectivity_error,
    discriminator_loss,
    gan_loss,
    gradient_error,
    mse,
    sad,
)
from alphagan_matting.losses.metrics import gauss_gradient_kernels


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)[None, None]


PRED = _t([[0.2, 0.9], [0.5, 1.0]])
GT = _t([[0.0, 1.0], [0.5, 0.0]])
TRIMAP = _t([[0.5, 0.5], [1.0, 0.5]])  # three unknown pixels: errors 0.2, 0.1 and 1.0


def test_alpha_loss_is_mean_over_unknown():
    assert alpha_loss(PRED, GT, TRIMAP).item() == pytest.approx((0.2 + 0.1 + 1.0) / 3, abs=1e-6)


def test_alpha_loss_epsilon_when_exact():
    # sqrt(0 + eps²) = eps: the smooth L1 never reaches exactly zero.
    assert alpha_loss(GT, GT, TRIMAP, eps=1e-3).item() == pytest.approx(1e-3, rel=1e-4)


def test_composition_loss_hand_case():
    fg = torch.full((1, 3, 2, 2), 0.5)
    bg = torch.zeros((1, 3, 2, 2))
    # composite = 0.5·alpha, so each channel's error is half the alpha error.
    expected = 0.5 * (0.2 + 0.1 + 1.0) / 3
    assert composition_loss(PRED, GT, fg, bg, TRIMAP).item() == pytest.approx(expected, abs=1e-6)


def test_losses_ignore_known_region():
    pred = PRED.clone()
    pred[0, 0, 1, 0] = 0.0  # a known pixel: changing it changes nothing
    assert alpha_loss(pred, GT, TRIMAP).item() == pytest.approx(alpha_loss(PRED, GT, TRIMAP).item())


def test_gan_losses():
    assert gan_loss(torch.zeros(1, 1, 3, 3), True).item() == pytest.approx(math.log(2), abs=1e-6)
    assert gan_loss(torch.zeros(1, 1, 3, 3), False).item() == pytest.approx(math.log(2), abs=1e-6)
    assert discriminator_loss(torch.full((2, 1, 2, 2), 50.0), torch.full((2, 1, 2, 2), -50.0)).item() < 1e-6
    assert discriminator_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(math.log(2))


def test_sad_and_mse_hand_case():
    pred = np.array([[0.2, 0.9], [0.5, 1.0]])
    gt = np.array([[0.0, 1.0], [0.5, 0.0]])
    trimap = np.array([[128, 128], [255, 128]], dtype=np.uint8)
    assert sad(pred, gt, trimap) == pytest.approx((0.2 + 0.1 + 1.0) / 1000)
    assert mse(pred, gt, trimap) == pytest.approx((0.04 + 0.01 + 1.0) / 3)
    assert mse(pred, gt, np.zeros_like(trimap)) == 0.0


def test_gradient_kernel_matches_matlab_gaussgradient():
    hx, hy = gauss_gradient_kernels(1.4)
    # halfsize = ceil(1.4·sqrt(-2·ln(sqrt(2π)·1.4·0.01))) = ceil(3.62) = 4
    assert hx.shape == (9, 9)
    assert np.sqrt((hx**2).sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(hx, -hx[:, ::-1], atol=1e-12)  # odd along x
    np.testing.assert_allclose(hy, hx.T)


def test_gradient_error_on_a_ramp():
    # α = a·x: away from the border, |∇α| = a·c with c = -Σ hx[i, j]·(j - 4); GT is flat, so the
    # error at each unknown pixel is (a·c)².
    a = 0.05
    x = np.arange(20, dtype=np.float64)
    pred = np.tile(a * x, (20, 1))
    gt = np.zeros_like(pred)
    trimap = np.zeros((20, 20), dtype=np.uint8)
    trimap[8:12, 8:12] = 128  # 16 interior pixels
    hx, _ = gauss_gradient_kernels(1.4)
    c = -(hx * (np.arange(9) - 4)[None, :]).sum()
    assert gradient_error(pred, gt, trimap) == pytest.approx(16 * (a * c) ** 2 / 1000)
    assert gradient_error(gt, gt, trimap) == 0.0


def test_connectivity_error_hand_case():
    # GT has a second blob at the right end that the prediction half-misses.
    gt = np.array([[1.0, 1.0, 0.0, 0.0, 1.0]])
    pred = np.array([[1.0, 1.0, 0.0, 0.0, 0.5]])
    trimap = np.full((1, 5), 128, dtype=np.uint8)
    # Pixel 4 is not in the largest component at any threshold → l = 0. φ_gt = 1 - 1 = 0, φ_pred = 1 - 0.5.
    assert connectivity_error(pred, gt, trimap) == pytest.approx(0.5 / 1000)
    # Below the 0.15 tolerance the prediction's stray value counts as fully disconnected (φ = 1).
    pred[0, 4] = 0.1
    assert connectivity_error(pred, gt, trimap) == pytest.approx(1.0 / 1000)
    assert connectivity_error(gt, gt, trimap) == 0.0
