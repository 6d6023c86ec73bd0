import math

import numpy as np
import pytest
import torch
from torch import nn

from shared.tiling import (
    create_blend_weight,
    extract_patch,
    patch_grid,
    stitch_tiles,
    tile_positions,
    tile_tensor,
    tiled_forward,
)

MODES = ["linear", "gaussian", "constant"]
SIZES = [(77, 131), (64, 64), (33, 97), (20, 13), (1, 1)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_tile_then_stitch_returns_the_image(mode, size):
    x = torch.randn(2, 3, *size)
    tiles, positions = tile_tensor(x, tile_size=32, overlap=8)
    assert tiles.shape == (len(positions) * 2, 3, 32, 32)
    assert torch.allclose(stitch_tiles(tiles, positions, x.shape, 8, mode), x, atol=1e-5)


def test_tile_tensor_3d_input_and_positions_cover_the_edge():
    x = torch.arange(50 * 70, dtype=torch.float32).reshape(1, 50, 70)
    tiles, positions = tile_tensor(x, tile_size=32, overlap=8)
    assert positions == [(0, 0), (0, 24), (0, 38), (18, 0), (18, 24), (18, 38)]
    assert tiles.shape == (6, 1, 32, 32)
    assert torch.equal(tiles[2], x[:, 0:32, 38:70])


def test_linear_blend_weight_hand_computed():
    w = create_blend_weight(6, 2, "linear")
    ramp = torch.tensor([1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3])
    assert torch.allclose(w, torch.outer(ramp, ramp))
    assert torch.equal(create_blend_weight(5, 2, "constant"), torch.ones(5, 5))
    g = create_blend_weight(16, 4, "gaussian")
    assert g.max() == 1 and g.min() > 0 and torch.allclose(g, g.T) and torch.allclose(g, g.flip(0))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="overlap"):
        tile_positions(10, 10, 8, 8)
    with pytest.raises(ValueError, match="blend mode"):
        create_blend_weight(8, 2, "cubic")
    with pytest.raises(ValueError, match="margin"):
        tiled_forward(lambda t: t, torch.zeros(1, 1, 8, 8), 8, 2, margin=1)


def _conv_net(out_channels=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, out_channels, 3, padding=1)).eval()


@pytest.mark.parametrize("mode", MODES)
def test_tiled_forward_equals_full_forward_when_margin_covers_receptive_field(mode):
    net = _conv_net()
    x = torch.randn(2, 3, 77, 131)
    full = net(x)
    # Receptive field 5 → 2 contaminated pixels at each tile edge; margin 2 drops exactly those.
    tiled = tiled_forward(net, x, tile_size=32, overlap=8, batch_size=3, mode=mode, margin=2)
    assert tiled.shape == full.shape
    assert torch.allclose(tiled, full, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "gaussian"])
def test_feathering_hides_seams(mode):
    net = _conv_net(3)
    x = torch.rand(1, 3, 96, 96)
    full = net(x)
    tiled = tiled_forward(net, x, tile_size=32, overlap=16, mode=mode)
    mse = torch.mean((tiled - full) ** 2).item()
    peak = (full.max() - full.min()).item()
    assert 10 * math.log10(peak**2 / mse) > 40


def test_upscaling_fn_and_multiple_outputs():
    x = torch.randn(1, 3, 45, 70)

    def fn(tiles):
        up = nn.functional.interpolate(tiles, scale_factor=2, mode="nearest")
        return {"sr": up, "mask": tiles[:, :1, ::2, ::2], "gray": tiles.mean(1, keepdim=True)}

    out = tiled_forward(fn, x, tile_size=16, overlap=4, scale=2)
    assert out["sr"].shape == (1, 3, 90, 140)
    assert torch.allclose(out["sr"], nn.functional.interpolate(x, scale_factor=2), atol=1e-5)
    assert out["mask"].shape == (1, 1, 22, 35)
    assert torch.allclose(out["gray"], x.mean(1, keepdim=True), atol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        tiled_forward(fn, x, tile_size=16, overlap=4, scale=1)


def test_tuple_output_and_3d_input():
    x = torch.randn(3, 40, 50)
    a, b = tiled_forward(lambda t: (t * 2, t[:, :1]), x, tile_size=16, overlap=4)
    assert a.shape == (3, 40, 50) and b.shape == (1, 40, 50)
    assert torch.allclose(a, 2 * x, atol=1e-5)


def test_batches_are_bounded_and_every_tile_is_seen_once():
    x = torch.randn(2, 3, 100, 100)
    seen = []

    def fn(tiles):
        seen.append(tiles.shape[0])
        return tiles

    tiled_forward(fn, x, tile_size=32, overlap=8, batch_size=3)
    n_tiles = len(tile_positions(100, 100, 32, 8)) * 2
    assert max(seen) <= 3 and sum(seen) == n_tiles


def test_output_is_a_normal_tensor_on_the_input_device():
    x = torch.randn(1, 3, 40, 40)
    out = tiled_forward(lambda t: t, x, tile_size=16, overlap=4)
    assert out.device == x.device and not out.is_inference()
    out += 1  # callers may modify the result in place


def test_bf16_precision_runs_and_stays_close():
    net = _conv_net()
    x = torch.randn(1, 3, 48, 48)
    out = tiled_forward(net, x, tile_size=32, overlap=8, precision="bf16", channels_last=True)
    assert out.dtype == torch.float32
    assert torch.allclose(out, net(x), atol=0.1)


def test_patch_grid_hand_computed():
    assert patch_grid(100, 100, 100, 50) == [(0, 0)]
    assert patch_grid(60, 60, 100, 50) == [(0, 0)]
    # 4000 px with 2048/1536: patches at 0 and 1536 stop at 3584 < 4000, so one more crosses the edge.
    assert patch_grid(4000, 2048, 2048, 1536) == [(0, 0), (1536, 0), (3072, 0)]
    # Exactly covered: no extra patch.
    assert patch_grid(3584, 2048, 2048, 1536) == [(0, 0), (1536, 0)]


def test_extract_patch_reflects_like_cv2_border_reflect():
    image = np.arange(5, dtype=np.uint8).reshape(1, 5)
    image = np.repeat(image, 5, axis=0)
    patch = extract_patch(image, 0, 2, 6)
    # columns 2,3,4 then mirrored with the edge repeated: 4,3,2  (cv2.BORDER_REFLECT: ...cba|abc...)
    assert patch.shape == (6, 6)
    assert patch[0].tolist() == [2, 3, 4, 4, 3, 2]
    assert patch[:, 0].tolist() == [2] * 6


class _TinyGroupNormUNet(nn.Module):
    """conv/GroupNorm/ReLU, a pooled level and back up, and a skip: a U-Net's layer kinds, small."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU())
        self.mid = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
                                 nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(16, 8, 3, padding=1),
                                 nn.GroupNorm(2, 8), nn.ReLU())
        self.head = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        skip = self.enc(x)
        return self.head(torch.cat([self.mid(skip), skip], dim=1))


def _tiny_unet_and_images():
    torch.manual_seed(0)
    net = _TinyGroupNormUNet().eval()
    # A left-to-right ramp, different per image: every tile (and each image) has its own statistics.
    x = torch.randn(2, 3, 64, 88) + torch.linspace(-2, 2, 88) * torch.tensor([1.0, -0.5]).view(2, 1, 1, 1)
    with torch.no_grad():
        return net, x, net(x)


def test_image_norm_stats_give_the_untiled_groupnorm_result():
    net, x, full = _tiny_unet_and_images()
    # margin 8 covers this net's receptive field, so only the GroupNorm statistics can make tiles differ.
    common = dict(tile_size=48, overlap=24, margin=8, batch_size=4)
    per_tile = tiled_forward(net, x, norm_stats="tile", **common)
    whole = tiled_forward(net, x, norm_stats="image", channels_last=True, **common)
    assert (per_tile - full).abs().max() > 0.3  # per-tile statistics: visibly another image
    assert torch.allclose(whole, full, atol=1e-5)
    # Without the margin, tile edges keep plain tiling's zero-padding error, far below the statistics'.
    no_margin = tiled_forward(net, x, tile_size=48, overlap=24, norm_stats="image")
    plain = tiled_forward(net, x, tile_size=48, overlap=24)
    assert (no_margin - full).abs().mean() < 0.1 * (plain - full).abs().mean()


def test_downscaled_norm_stats_come_from_one_untiled_pass():
    net, x, full = _tiny_unet_and_images()
    common = dict(tile_size=48, overlap=24, margin=8)
    # A copy no smaller than the image is the image: its statistics are the untiled ones.
    same_size = tiled_forward(net, x, norm_stats="downscaled", norm_size=88, **common)
    assert torch.allclose(same_size, full, atol=1e-5)
    smaller = tiled_forward(net, x, norm_stats="downscaled", norm_size=44, **common)
    assert smaller.shape == full.shape and not torch.allclose(smaller, full, atol=1e-3)


def test_norm_stats_leave_models_without_groupnorm_alone():
    net = _conv_net()
    x = torch.randn(1, 3, 50, 70)
    plain = tiled_forward(net, x, tile_size=32, overlap=8)
    for norm_stats in ("image", "downscaled"):
        assert torch.equal(tiled_forward(net, x, tile_size=32, overlap=8, norm_stats=norm_stats), plain)


def test_norm_stats_take_the_module_from_fn_or_norm_model_and_restore_it():
    net, x, full = _tiny_unet_and_images()
    common = dict(tile_size=48, overlap=24, margin=8)
    via_callable = tiled_forward(lambda t: net(t), x, norm_stats="image", norm_model=net, **common)
    assert torch.allclose(via_callable, full, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in net.modules())
    with torch.no_grad():
        assert torch.equal(net(x), full)  # the model is itself again afterwards
    with pytest.raises(ValueError, match="norm_model"):
        tiled_forward(lambda t: net(t), x, norm_stats="image", **common)
    with pytest.raises(ValueError, match="norm_stats"):
        tiled_forward(net, x, norm_stats="batch", **common)
