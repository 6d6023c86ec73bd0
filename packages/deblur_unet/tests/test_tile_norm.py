"""--norm-stats: GroupNorm statistics per tile (the default) or from the whole image, through the CLI and API."""

import numpy as np
import pytest
import torch

from deblur_unet.data import to_model_range
from deblur_unet.inference import TilingOptions, build_parser, deblur_image, deblur_tensor, main
from deblur_unet.model import DeblurUNet
from shared.errors import ConfigError
from shared.images import read_image, save_image


def _model() -> DeblurUNet:
    torch.manual_seed(0)
    return DeblurUNet(base_ch=8).eval()


def _uneven_image() -> np.ndarray:
    """Dark on the left, bright and busy on the right: each tile has statistics of its own."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.1, 0.9, 48)[None, :, None]
    noise = rng.normal(0, 1, (48, 48, 3)) * np.linspace(0.02, 0.2, 48)[None, :, None]
    return (np.clip(ramp + noise, 0, 1) * 255).astype(np.uint8)


def test_cli_norm_stats_image_follows_the_untiled_forward_and_tile_stays_the_default(tmp_path):
    from shared.checkpoint import make_training_state, save_checkpoint

    model = _model()
    checkpoint = save_checkpoint(tmp_path / "m.pth", make_training_state(
        kind="deblur_unet", epoch=1, global_step=1, objects={"model": model}, extra={"model_config": model.config()}))
    image = _uneven_image()
    save_image(tmp_path / "in.png", image)
    with torch.no_grad():
        full = model(to_model_range(image).unsqueeze(0))[0]
    untiled = ((full.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()

    def infer(*flags):
        out = tmp_path / f"out{len(flags)}.png"
        assert main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in.png"), "--output", str(out),
                     "--tile-size", "32", "--overlap", "16", "--batch-size", "4", "--device", "cpu", *flags]) == 0
        return np.abs(read_image(out).astype(np.float64) - untiled).mean()

    assert build_parser().parse_args(["--checkpoint", "c", "--input", "i", "--output", "o"]).norm_stats == "tile"
    per_tile, whole = infer(), infer("--norm-stats", "image")
    # Whole-image statistics leave only the tiles' zero-padding at their edges, a fraction of the difference.
    assert whole < 0.4 * per_tile, (whole, per_tile)  # measured: 5.2 vs 22.2 (/255)


def test_norm_stats_api_and_bad_values():
    model, image = _model(), _uneven_image()
    same = deblur_image(model, image, tile_size=32, overlap=8, norm_stats="downscaled")
    assert same.shape == image.shape and same.dtype == np.uint8
    with pytest.raises(ConfigError, match="--norm-stats"):
        TilingOptions(norm_stats="batch").validate()
    # A plain callable (an ONNX session's) has no GroupNorm modules to give image statistics to.
    with pytest.raises(ConfigError, match="--norm-stats image needs a PyTorch model"):
        deblur_tensor(lambda t: model(t), to_model_range(image).unsqueeze(0), TilingOptions(32, 8, norm_stats="image"))
