"""Generator/discriminator shapes, ranges, known-region copy and encoder loading."""

from __future__ import annotations

import torch

from alphagan_matting.models import AlphaGenerator, PatchDiscriminator


def _tiny() -> AlphaGenerator:
    torch.manual_seed(0)
    return AlphaGenerator(base_width=8, layers=[1, 1, 1, 1], aspp_channels=16).eval()


def _input(h: int, w: int) -> torch.Tensor:
    x = torch.randn(2, 4, h, w)
    trimap = torch.full((2, 1, h, w), 0.5)
    trimap[:, :, : h // 3] = 0.0
    trimap[:, :, -h // 3 :] = 1.0
    x[:, 3:] = trimap
    return x


def test_generator_shape_range_and_known_regions():
    model = _tiny()
    x = _input(37, 53)  # not a multiple of 8
    with torch.no_grad():
        alpha = model(x)
    assert alpha.shape == (2, 1, 37, 53)
    assert alpha.min() >= 0 and alpha.max() <= 1
    trimap = x[:, 3:]
    assert torch.equal(alpha[trimap == 0.0], torch.zeros_like(alpha[trimap == 0.0]))
    assert torch.equal(alpha[trimap == 1.0], torch.ones_like(alpha[trimap == 1.0]))
    unknown = alpha[trimap == 0.5]
    assert ((unknown > 0) & (unknown < 1)).all()


def test_generator_has_resnet50_layout_by_default():
    model = AlphaGenerator()
    assert model.conv1[0].in_channels == 4
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    assert model.layer4[-1].conv3.out_channels == 2048
    assert model.layer4[-1].conv2.dilation == (4, 4)


def test_load_encoder_widens_rgb_conv1():
    model = _tiny()
    rgb = torch.randn(8, 3, 7, 7)
    state = {"conv1.weight": rgb, "bn1.running_mean": torch.ones(8), "fc.weight": torch.randn(10, 32)}
    loaded = model.load_encoder(state)
    assert "conv1.0.weight" in loaded and "conv1.1.running_mean" in loaded
    assert torch.equal(model.conv1[0].weight[:, :3], rgb)
    assert torch.equal(model.conv1[0].weight[:, 3], torch.zeros(8, 7, 7))


def test_patch_discriminator_output():
    d = PatchDiscriminator(in_channels=4, width=8)
    out = d(torch.randn(2, 4, 64, 64))
    assert out.shape[:2] == (2, 1) and out.shape[-1] > 1  # one logit per patch


def test_load_pretrained_encoder_from_file(tmp_path):
    import pytest

    from alphagan_matting.utils import load_pretrained_encoder
    from shared.errors import DataError

    source = _tiny()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "enc.pth")
    target = AlphaGenerator(base_width=8, layers=[1, 1, 1, 1], aspp_channels=16)
    message = load_pretrained_encoder(target, tmp_path / "enc.pth")
    assert "tensors loaded" in message
    assert torch.equal(target.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    assert "random initialisation" in load_pretrained_encoder(target, None)
    with pytest.raises(DataError, match="pretrained weights file not found"):
        load_pretrained_encoder(target, tmp_path / "missing.pth")
