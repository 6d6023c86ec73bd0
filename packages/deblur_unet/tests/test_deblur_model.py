"""DeblurUNet: parameter count, shapes at any size, residual flag."""

import pytest
import torch

from deblur_unet.model import DeblurUNet, count_parameters


def test_default_model_has_about_8_6m_parameters():
    model = DeblurUNet(base_ch=32)
    assert count_parameters(model) == 8_636_451
    assert 8.55e6 < count_parameters(model) < 8.65e6


def test_channel_widths_follow_the_spec():
    model = DeblurUNet(base_ch=32)
    widths = [down.conv.block[0].out_channels for down in model.downs]
    assert widths == [32, 64, 128, 256]
    assert model.bottleneck.block[0].out_channels == 512
    assert [up.conv.block[0].out_channels for up in model.ups] == [256, 128, 64, 32]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(n.num_groups == 8 for n in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("size", [(64, 64), (67, 45), (33, 97), (17, 16)])
def test_output_keeps_any_input_size(size):
    model = DeblurUNet(base_ch=8).eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_no_final_activation_output_is_unbounded():
    model = DeblurUNet(base_ch=8)
    with torch.no_grad():
        model.final.bias.fill_(5.0)
        y = model(torch.zeros(1, 3, 32, 32))
    assert y.min() > 1.0  # a Tanh/Sigmoid head could never exceed 1


def test_residual_flag_adds_the_input():
    model = DeblurUNet(base_ch=8, residual=True)
    with torch.no_grad():
        model.final.weight.zero_()
        model.final.bias.zero_()
        x = torch.rand(1, 3, 40, 40)
        assert torch.equal(model(x), x)
    assert DeblurUNet().residual is False


def test_gradients_reach_every_parameter():
    model = DeblurUNet(base_ch=8)
    model(torch.rand(2, 3, 32, 32)).pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_base_ch_is_refused():
    with pytest.raises(ValueError, match="multiple of 8"):
        DeblurUNet(base_ch=12)
