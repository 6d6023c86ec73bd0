"""Each loss against a hand-computed value."""

import math

import torch

from gansformer_inpaint.training.losses import (
    d_loss_nonsaturating,
    g_loss_nonsaturating,
    masked_l1,
    r1_penalty,
    reconstruction_loss,
)


def test_nonsaturating_losses_at_zero_logits():
    zero = torch.zeros(4)
    assert math.isclose(d_loss_nonsaturating(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(g_loss_nonsaturating(zero).item(), math.log(2), rel_tol=1e-6)


def test_nonsaturating_losses_hand_values():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    expected_d = math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-2.0))
    assert math.isclose(d_loss_nonsaturating(real, fake).item(), expected_d, rel_tol=1e-6)
    assert math.isclose(g_loss_nonsaturating(fake).item(), math.log(1 + math.exp(1.0)), rel_tol=1e-6)


def test_masked_l1_and_reconstruction_weights():
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert math.isclose(masked_l1(pred, target, mask).item(), 1.0, rel_tol=1e-6)
    assert math.isclose(masked_l1(pred, target, 1 - mask).item(), 3.0, rel_tol=1e-6)
    total, hole, valid = reconstruction_loss(pred, target, mask, hole_weight=6.0)
    assert math.isclose(total.item(), (6 * 1.0 + 3.0) / 7, rel_tol=1e-6)
    assert masked_l1(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_r1_of_a_linear_discriminator_is_the_weight_norm():
    w = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(5, 3, requires_grad=True)
    logits = x @ w
    assert math.isclose(r1_penalty(logits, x).item(), (w**2).sum().item(), rel_tol=1e-6)
