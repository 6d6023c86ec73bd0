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


def _identity_checkpoint(path: Path) -> Path:
    """A checkpoint of the untrained default model: global residual, zero head, i.e. exactly the identity."""
    from shared.checkpoint import make_training_state, save_checkpoint

    model = DeblurUNet(base_ch=8, residual=True)
    torch.nn.init.zeros_(model.final.weight)
    torch.nn.init.zeros_(model.final.bias)
    return save_checkpoint(path, make_training_state(kind="deblur_unet", epoch=1, global_step=1,
                                                     objects={"model": model}, extra={"model_config": model.config()}))


def _png_bit_depth(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return data[24]  # IHDR: width, height, then the bit depth per channel


def test_16bit_png_in_16bit_png_out_computed_at_full_precision(tmp_path, capsys):
    from deblur_unet.inference import main
    from shared.images import save_image

    if (DATA / "blur").is_dir():
        frame = read_image(sorted((DATA / "blur").iterdir())[0], dtype="uint8")[100:196, 100:228]
    else:  # the real frame sits beside the repository; any photo-like image shows the same
        from deblur_unet.data import procedural_image

        frame = np.round(procedural_image(128, np.random.default_rng(0))[:96] * 255).astype(np.uint8)
    # The frame at 16 bits plus a ramp that climbs one 8-bit step across the width: detail below 8 bits.
    ramp = np.linspace(0, 256, frame.shape[1])[None, :, None]
    levels = np.clip(frame.astype(np.float64) * 257 + ramp, 0, 65535).round().astype(np.uint16)
    save_image(tmp_path / "in16.png", levels / 65535.0, bit_depth=16)
    save_image(tmp_path / "in8.png", np.round(levels / 257.0).astype(np.uint8))  # the same photo at 8 bits
    assert _png_bit_depth(tmp_path / "in16.png") == 16 and _png_bit_depth(tmp_path / "in8.png") == 8
    ckpt = _identity_checkpoint(tmp_path / "identity.pth")
    for name in ("16", "8"):
        main(["--checkpoint", str(ckpt), "--input", str(tmp_path / f"in{name}.png"), "--output",
              str(tmp_path / f"out{name}.png"), "--tile-size", "64", "--overlap", "16", "--device", "cpu"])

    assert _png_bit_depth(tmp_path / "out16.png") == 16 and _png_bit_depth(tmp_path / "out8.png") == 8
    out16 = read_image(tmp_path / "out16.png", dtype="float32").astype(np.float64) * 65535
    out8 = read_image(tmp_path / "out8.png", dtype="uint8").astype(np.float64) * 257
    assert out16.shape == out8.shape == levels.shape
    assert np.abs(out16 - levels).max() <= 1.0  # the identity, to the last bit of 16
    assert np.abs(out8 - levels).mean() > 32  # the 8-bit copy lost the ramp (mean error ~64 levels)
    assert not any(line.startswith("note: ") for line in capsys.readouterr().err.splitlines())


def test_api_keeps_the_dtype_of_uint16_and_float_arrays():
    model = DeblurUNet(base_ch=8, residual=True).eval()
    torch.nn.init.zeros_(model.final.weight)
    torch.nn.init.zeros_(model.final.bias)
    levels = np.random.default_rng(0).integers(0, 65536, (40, 36, 3)).astype(np.uint16)
    out = deblur_image(model, levels, tile_size=32, overlap=8)
    assert out.dtype == np.uint16 and np.abs(out.astype(np.int64) - levels).max() <= 1
    floats = levels / 65535.0
    out = deblur_image(model, floats, tile_size=32, overlap=8)
    assert out.dtype == np.float32 and np.abs(out - floats).max() < 1e-5


def test_conversions_are_said_once_per_inference_job(tmp_path, capsys):
    from deblur_unet.inference import main

    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8), "L").save(tmp_path / "in" / f"{name}.png")
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(tmp_path / "in" / "d.png")
    main(["--checkpoint", str(_identity_checkpoint(tmp_path / "identity.pth")), "--input", str(tmp_path / "in"),
          "--output", str(tmp_path / "out"), "--tile-size", "32", "--overlap", "8", "--device", "cpu"])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "grayscale" in notes[0] and "3 of 4" in notes[0] and "a.png" in notes[0], notes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png", "d.png"]


def test_evaluation_scores_16bit_pairs_at_full_precision(tmp_path):
    from deblur_unet.data import find_pairs
    from deblur_unet.evaluate import evaluate_pairs
    from shared.images import save_image

    # The blurry file is the sharp one plus 100/65535 everywhere: invisible at 8 bits, 56.3 dB at 16.
    levels = np.random.default_rng(0).integers(0, 65000, (32, 40, 3)).astype(np.float64)
    for sub, offset in (("sharp", 0), ("blur", 100)):
        (tmp_path / sub).mkdir()
        save_image(tmp_path / sub / "a.png", (levels + offset) / 65535.0, bit_depth=16)
    mean, _ = evaluate_pairs(lambda image: image, find_pairs(tmp_path), save_dir=tmp_path / "out")
    assert mean["input_psnr"] == pytest.approx(20 * np.log10(65535 / 100), abs=0.05)
    assert _png_bit_depth(tmp_path / "out" / "a.png") == 16
