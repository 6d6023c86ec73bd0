"""Generator and discriminator: shapes, ranges, configs, receptive field."""

from __future__ import annotations

import pytest
import torch

from neuropbr import MultiViewPBRGenerator
from neuropbr.models import PatchDiscriminator, build_discriminator, patchgan_receptive_field
from neuropbr.models.decoders.unet import PBRHeads


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_generator_output_shapes_and_ranges(size, tiny_config):
    torch.manual_seed(0)
    model = MultiViewPBRGenerator(tiny_config()).eval()
    h, w = size
    with torch.no_grad():
        out = model(torch.randn(2, 3, 3, h, w))
    assert set(out) == {"albedo", "roughness", "metallic", "normal"}
    assert out["albedo"].shape == (2, 3, h, w)
    assert out["roughness"].shape == out["metallic"].shape == (2, 1, h, w)
    assert out["normal"].shape == (2, 3, h, w)
    for key in ("albedo", "roughness", "metallic"):
        assert float(out[key].min()) >= 0.0 and float(out[key].max()) <= 1.0
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(2, h, w), atol=1e-4)


def test_generator_accepts_stacked_views_and_plain_dict_config(tiny_config):
    cfg = tiny_config()
    model = MultiViewPBRGenerator(cfg.to_dict()).eval()
    x = torch.randn(1, 3, 3, 32, 32)
    a = model(x)
    b = model(x.reshape(1, 9, 32, 32))
    assert torch.equal(a["albedo"], b["albedo"])


def test_unet_encoder_and_stride_one_resnet(tiny_config):
    x = torch.randn(1, 3, 3, 32, 32)
    unet = MultiViewPBRGenerator(tiny_config(encoder_type="unet", encoder_channels=[8, 16, 32, 64])).eval()
    assert unet(x)["normal"].shape == (1, 3, 32, 32)
    stride1 = MultiViewPBRGenerator(tiny_config(encoder_stride=1)).eval()
    assert stride1.stride == 16
    assert stride1(x)["albedo"].shape == (1, 3, 32, 32)


def test_freeze_backbone_and_bn(tiny_config):
    model = MultiViewPBRGenerator(tiny_config(freeze_backbone=True, freeze_bn=True)).train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_views_attend_across_views(tiny_config):
    """Changing one view's corner changes the fused bottleneck everywhere: fusion is global across views."""
    torch.manual_seed(0)
    model = MultiViewPBRGenerator(tiny_config()).eval()
    x = torch.randn(1, 3, 3, 128, 128)
    y = x.clone()
    y[:, 2, :, :24, :24] += 1.0
    with torch.no_grad():
        fx = model.fusion(model.encoder(x.reshape(3, 3, 128, 128))[-1])
        fy = model.fusion(model.encoder(y.reshape(3, 3, 128, 128))[-1])
    change = (fx - fy).abs().amax(dim=1)[0]
    assert change.shape == (4, 4)
    assert float(change[-1, -1]) > 1e-3


def test_discriminator_receptive_field_matches_spec():
    assert patchgan_receptive_field(3) == 70
    assert patchgan_receptive_field(4) == 142
    assert patchgan_receptive_field(6) == 574
    d = PatchDiscriminator(8, ndf=8, n_layers=4, norm="none")
    assert d.receptive_field == 142
    # Empirical check (no instance norm, which is global): a logit depends on at most the claimed window.
    x = torch.zeros(1, 8, 320, 320, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)) > 0)
    assert int(rows.max() - rows.min() + 1) <= 142


def test_discriminator_config_and_sigmoid(tiny_config):
    cfg = tiny_config(discriminator_use_sigmoid=True, discriminator_type="simple")
    d = build_discriminator(cfg.model)
    assert d.n_layers == 3
    with torch.no_grad():
        out = d(torch.rand(2, 8, 64, 64))
    assert out.shape[0] == 2 and out.shape[1] == 1
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_tiled_prediction_at_native_resolution(tiny_config):
    """``--tile`` path: an input larger than the training size comes back at full size, normals unit length."""
    from neuropbr.inference import predict

    cfg = tiny_config()
    cfg.data.synthetic, cfg.data.synthetic_image_size = True, 32
    model = MultiViewPBRGenerator(cfg, quiet=True).eval()
    views = torch.rand(1, 3, 3, 80, 72)
    tiled = predict(model, views, cfg, mode="tile", tile_overlap=8)
    resized = predict(model, views, cfg, mode="resize")
    for out in (tiled, resized):
        assert out["albedo"].shape == (1, 3, 80, 72) and out["metallic"].shape == (1, 1, 80, 72)
        assert torch.allclose(out["normal"].norm(dim=1), torch.ones(1, 80, 72), atol=1e-4)


def test_normal_detail_head_predicts_tilt_from_flat():
    torch.manual_seed(0)
    heads = PBRHeads(4, detail_channels=2)
    x, detail = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 5, 5)
    flat = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 5, 5)
    assert torch.equal(heads(x, detail)["normal"], flat)  # zero tilt at initialisation
    # A tilt (x, y) = (0.75, 0) everywhere: normal (0.75, 0, 1) / 1.25 = (0.6, 0, 0.8).
    heads.heads["normal"][-1].bias.data = torch.tensor([0.75, 0.0])
    expected = torch.tensor([0.6, 0.0, 0.8]).view(1, 3, 1, 1).expand(1, 3, 5, 5)
    assert torch.allclose(heads(x, detail)["normal"], expected, atol=1e-6)
    # The detail features reach the normal head only.
    torch.nn.init.normal_(heads.heads["normal"][-1].weight)
    a, b = heads(x, detail), heads(x, detail + 1.0)
    assert not torch.allclose(a["normal"], b["normal"]) and torch.equal(a["albedo"], b["albedo"])
    with pytest.raises(ValueError, match="detail"):
        heads(x)


def test_generator_with_normal_detail_head_starts_flat_and_learns(tiny_config):
    torch.manual_seed(0)
    model = MultiViewPBRGenerator(tiny_config(normal_detail_head=True))
    x = torch.randn(2, 3, 3, 32, 32)
    normal = model(x)["normal"]
    assert normal.shape == (2, 3, 32, 32) and torch.equal(normal[:, 2], torch.ones(2, 32, 32))
    target = torch.nn.functional.normalize(torch.randn(2, 3, 32, 32) * 0.1 + torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1), dim=1)
    (model(x)["normal"] - target).abs().mean().backward()
    last = model.heads.heads["normal"][-1]
    assert last.weight.grad is not None and float(last.weight.grad.abs().sum()) > 0
