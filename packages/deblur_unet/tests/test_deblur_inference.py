"""Tiled inference: full size in and out, agreement with the untiled forward, no seams, Python API."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblur_unet.data import to_model_range
from deblur_unet.inference import Deblurrer, TilingOptions, deblur_image, deblur_tensor
from deblur_unet.model import DeblurUNet
from shared.errors import ConfigError
from shared.images import read_image

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "deblur"


def _model(base_ch=8):
    torch.manual_seed(0)
    return DeblurUNet(base_ch=base_ch).eval()


def _real_image() -> np.ndarray:
    if not (DATA / "blur").is_dir():
        pytest.skip(f"real deblur data not found at {DATA} (it sits beside the repository in CI)")
    return read_image(sorted((DATA / "blur").iterdir())[0])


def _column_jumps(out: torch.Tensor) -> torch.Tensor:
    """Per column, the horizontal gradient divided by the median of its neighbours' (1 = smooth)."""
    g = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1, 2))
    return g / torch.stack([g.roll(s) for s in (-3, -2, 2, 3)]).median(0).values


@pytest.mark.parametrize("size", [(100, 77), (333, 517)])
def test_deblur_image_keeps_odd_sizes(size):
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = deblur_image(_model(), image, tile_size=128, overlap=32)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_pil_in_pil_out_and_deblurrer_reuses_weights():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    deblur = Deblurrer(_model(), TilingOptions(tile_size=64, overlap=16), device="cpu")
    first, second = deblur(image), deblur(image)
    assert isinstance(first, Image.Image) and first.size == image.size
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_tiled_matches_full_forward_away_from_the_border():
    # GroupNorm normalises each tile with its own statistics, so tiles see the same statistics as the
    # whole image only on statistically uniform content; there the blend must reproduce the full pass.
    image = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    x = to_model_range(image).unsqueeze(0)
    model = _model()
    with torch.no_grad():
        full = model(x)
    tiled = deblur_tensor(model, x, TilingOptions(tile_size=256, overlap=64))
    inner = (tiled - full).abs()[..., 32:-32, 32:-32]
    assert tiled.shape == full.shape
    assert inner.mean() < 0.02  # measured 0.006 (outputs have std 0.44)
    assert torch.quantile(inner.flatten(), 0.99) < 0.1


def test_linear_blending_leaves_no_seams_on_a_real_image():
    x = to_model_range(_real_image()[:320, :384]).unsqueeze(0)
    model = _model()
    blended = deblur_tensor(model, x, TilingOptions(tile_size=160, overlap=48, blend="linear"))
    hard = deblur_tensor(model, x, TilingOptions(tile_size=160, overlap=0, blend="constant"))
    # The metric does see seams: hard tile edges make a column jump several times its neighbours.
    assert _column_jumps(hard)[5:-5].max() > 3.0
    assert _column_jumps(blended)[5:-5].max() < 2.0


def test_tiling_options_are_checked():
    with pytest.raises(ConfigError, match="--overlap"):
        TilingOptions(tile_size=64, overlap=64).validate()
    with pytest.raises(ConfigError, match="--tile-size"):
        TilingOptions(tile_size=100).validate()
    with pytest.raises(ConfigError, match="--blend"):
        TilingOptions(blend="median").validate()


def test_training_tiling_follows_the_checkpoints_patch_size(tmp_path):
    from deblur_unet.inference import training_tiling
    from shared.checkpoint import make_training_state, save_checkpoint

    model = DeblurUNet(base_ch=8)

    def checkpoint(name, config):
        return save_checkpoint(tmp_path / name, make_training_state(
            kind="deblur_unet", epoch=1, global_step=1, objects={"model": model}, config=config,
            extra={"model_config": model.config()}))

    tiling = training_tiling(checkpoint("p128.pth", {"patch_size": 128}))
    assert (tiling.tile_size, tiling.overlap) == (128, 32)
    default = TilingOptions()
    tiling = training_tiling(checkpoint("none.pth", None))
    assert (tiling.tile_size, tiling.overlap) == (default.tile_size, default.overlap)
