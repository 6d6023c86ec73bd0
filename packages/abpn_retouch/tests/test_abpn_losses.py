import pytest
import torch

from abpn_retouch import losses


def test_masked_l1_hand_value():
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]]]])
    # (1·1 + 0.5·3) / (1 + 0.5) = 2.5 / 1.5
    assert losses.masked_l1(pred, target, mask).item() == pytest.approx(2.5 / 1.5, rel=1e-5)
    assert losses.masked_l1(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_global_l1():
    assert losses.global_l1(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])).item() == 2.5


def test_sobel_and_laplacian_on_a_ramp():
    ramp = torch.arange(5.0).repeat(5, 1)[None, None]  # value = column index
    gx, gy = losses.sobel(ramp)
    assert gx[0, 0, 2, 2].item() == 8.0 and gy[0, 0, 2, 2].item() == 0.0
    assert losses.laplacian(ramp)[0, 0, 1:4, 1:4].abs().max().item() == 0.0


def test_edge_and_high_freq_hand_value():
    pred = torch.zeros(1, 1, 5, 5)
    target = torch.zeros(1, 1, 5, 5)
    target[0, 0, 2, 2] = 1.0
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, 2, 2] = 1.0
    # At the centre: Sobel responses of a single impulse are 0 there; the Laplacian is -4.
    assert losses.masked_edge_loss(pred, target, mask).item() == pytest.approx(0.0)
    assert losses.masked_high_freq_loss(pred, target, mask).item() == pytest.approx(4.0, rel=1e-5)
    mask[0, 0, 2, 3] = 1.0  # right neighbour: Sobel x = -2, y = 0; Laplacian = 1
    assert losses.masked_edge_loss(pred, target, mask).item() == pytest.approx(0.5 * (2 / 2 + 0), rel=1e-5)
    assert losses.masked_high_freq_loss(pred, target, mask).item() == pytest.approx(5 / 2, rel=1e-5)


def test_dice_hand_value():
    logits = torch.tensor([[[[20.0, -20.0], [20.0, -20.0]]]])  # p ≈ [1, 0, 1, 0]
    gt = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # 1 - (2·1 + 1) / (2 + 2 + 1) = 0.4
    assert losses.dice_loss(logits, gt).item() == pytest.approx(0.4, abs=1e-6)
    assert losses.dice_loss(torch.full((1, 1, 2, 2), -30.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0.0)


def test_perceptual_is_frozen_and_reduces_resolution(capsys):
    loss = losses.VGGPerceptualLoss(max_size=32)
    assert "randomly initialised" in capsys.readouterr().err or loss.source != "random"
    assert not any(p.requires_grad for p in loss.parameters())
    assert len(loss.features) == losses.VGGPerceptualLoss.LAST_LAYER + 1
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    assert loss(x, x.detach()).item() == pytest.approx(0.0, abs=1e-6)
    value = loss(x, torch.rand(1, 3, 64, 64))
    value.backward()
    assert value.item() > 0 and x.grad is not None


def test_total_uses_spec_weights():
    weights = losses.LossWeights()
    assert (weights.masked_l1, weights.global_l1, weights.edge, weights.high_freq, weights.perceptual,
            weights.dice) == (1.3, 1.0, 1.0, 0.7, 0.5, 1.0)
    criterion = losses.RetouchLoss(losses.LossWeights(perceptual=0.0))
    pred, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    total, terms = criterion(pred, target, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    expected = 1.3 * terms["masked_l1"] + terms["global_l1"] + terms["edge"] + 0.7 * terms["high_freq"] + terms["dice"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
