import pytest
import torch

from abpn_retouch.model import ABPN, ABPNConfig, linear_light


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_shapes_and_range(levels, size):
    model = ABPN(ABPNConfig(pyramid_levels=levels, base_channels=8, refine_channels=4))
    out, mask = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert mask.shape == (2, 1, size[0] // 2, size[1] // 2)
    assert out.min() >= 0 and out.max() <= 1


def test_untrained_model_is_identity():
    model = ABPN(ABPNConfig(base_channels=8))
    x = torch.rand(1, 3, 64, 64)
    out, _ = model(x)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_linear_light():
    image = torch.tensor([0.2, 0.5, 0.9])
    torch.testing.assert_close(linear_light(image, torch.full((3,), 0.5)), image)
    torch.testing.assert_close(linear_light(image, torch.tensor([0.6, 0.25, 0.0])), torch.tensor([0.4, 0.0, -0.1]))


def test_every_parameter_gets_a_gradient():
    model = ABPN(ABPNConfig(pyramid_levels=2, base_channels=8))
    with torch.no_grad():  # leave the zero-init identity so gradients reach every layer
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    out, mask = model(torch.rand(1, 3, 64, 64))
    (out.mean() + mask.mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
