import json

import numpy as np
import pytest
import torch
from PIL import Image

from abpn_retouch.data import synthetic_portrait
from abpn_retouch.infer import retouch
from abpn_retouch.model import ABPN, ABPNConfig
from shared.checkpoint import make_training_state, save_checkpoint


def _checkpoint(tmp_path, perturb=True):
    torch.manual_seed(0)
    model = ABPN(ABPNConfig(base_channels=8, refine_channels=4))
    if perturb:  # move off the identity initialisation so tiling artefacts would show
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    state = make_training_state(kind="abpn_retouch", epoch=1, global_step=1, objects={"model": model},
                                extra={"model_config": {"pyramid_levels": 1, "base_channels": 8, "refine_channels": 4}})
    return model, save_checkpoint(tmp_path / "ckpt.pth", state)


def test_tiled_output_keeps_size_and_has_no_seams(tmp_path):
    model, _ = _checkpoint(tmp_path)
    model.eval()
    image, _ = synthetic_portrait(3, 200, 260)
    output, mask = retouch(model, image, tile_size=128, overlap=32)
    assert output.shape == (3, 200, 260) and mask.shape == (1, 100, 130)
    with torch.no_grad():
        whole, _ = model(torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255)
    diff = (output - whole[0]).abs()
    assert diff.mean() < 0.02, diff.mean()
    # Seams would be jumps across tile borders (every 96 px): compare with jumps elsewhere.
    cols = (output[:, :, 1:] - output[:, :, :-1]).abs().mean(dim=(0, 1))
    whole_cols = (whole[0][:, :, 1:] - whole[0][:, :, :-1]).abs().mean(dim=(0, 1))
    # (the last column differs by padding: the whole-image pass pads 260 to 264, the tiles do not)
    assert (cols - whole_cols)[:-2].abs().max() < 0.005


def test_infer_and_evaluate_entry_scripts(tmp_path, pair_dirs, run_script):
    _, ckpt = _checkpoint(tmp_path, perturb=False)
    original, retouch_dir = pair_dirs
    out = tmp_path / "out"
    result = run_script("infer.py", "--checkpoint", str(ckpt), "--input", str(original), "--output", str(out),
                        "--save-mask", "--tile-size", "64", "--overlap", "16", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    for name, size in (("img_0", (128, 96)), ("img_1", (80, 80))):
        assert Image.open(out / f"{name}.png").size == size
        assert Image.open(out / f"{name}_mask.png").size == size
    # The untrained model is the identity: the output equals the input.
    np.testing.assert_array_equal(np.asarray(Image.open(out / "img_0.png")),
                                  np.asarray(Image.open(original / "img_0.png")))
    metrics = tmp_path / "m.json"
    result = run_script("evaluate.py", "--checkpoint", str(ckpt), "--image-dir", str(original), "--gt-dir",
                        str(retouch_dir), "--output", str(metrics), "--tile-size", "64", "--overlap", "16",
                        "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(metrics.read_text())
    assert set(data["images"]) == {"img_0", "img_1"}
    assert abs(data["mean"]["psnr"] - data["mean"]["psnr_input"]) < 1e-6
    assert "mean (2)" in result.stdout and "mask_iou" in result.stdout


# Slow: checkpoint and image errors are tested in shared/tests and per package in tests/test_bad_inputs.py;
# this is the same three through infer.py.
@pytest.mark.slow
def test_infer_bad_inputs(tmp_path, run_script):
    _, ckpt = _checkpoint(tmp_path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = run_script("infer.py", "--checkpoint", str(bad), "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "bad.pth" in result.stderr and "Traceback" not in result.stderr
    result = run_script("infer.py", "--checkpoint", str(ckpt), "--input", str(tmp_path / "missing.png"),
                        "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "missing.png: input file or folder not found" in result.stderr
    truncated = tmp_path / "trunc.png"
    Image.fromarray(synthetic_portrait(0, 64, 64)[0]).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    result = run_script("infer.py", "--checkpoint", str(ckpt), "--input", str(truncated), "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "trunc.png" in result.stderr and "Traceback" not in result.stderr


def test_infer_output_png_for_one_file_is_that_file(tmp_path, pair_dirs, run_script):
    _, ckpt = _checkpoint(tmp_path, perturb=False)
    original, _ = pair_dirs
    out = tmp_path / "x.png"
    result = run_script("infer.py", "--checkpoint", str(ckpt), "--input", str(original / "img_1.png"), "--output",
                        str(out), "--save-mask", "--tile-size", "64", "--overlap", "16", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file() and Image.open(out).size == (80, 80)  # a file, not a folder named x.png
    assert Image.open(tmp_path / "x_mask.png").size == (80, 80)


def test_infer_folder_with_a_corrupt_file_writes_the_rest_and_fails(tmp_path, pair_dirs, run_script):
    _, ckpt = _checkpoint(tmp_path, perturb=False)
    original, _ = pair_dirs
    bad = original / "img_0.png"
    bad.write_bytes(bad.read_bytes()[:200])
    out = tmp_path / "out"
    result = run_script("infer.py", "--checkpoint", str(ckpt), "--input", str(original), "--output", str(out),
                        "--tile-size", "64", "--overlap", "16", "--device", "cpu")
    assert result.returncode == 4, result.stderr[-2000:]
    assert [p.name for p in out.iterdir()] == ["img_1.png"]
    assert f"error: {bad}: unreadable or truncated image" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 2 images failed (img_0.png); 1 written"


def _infer(*args: str) -> list:
    from abpn_retouch.infer import build_parser, run

    return run(build_parser().parse_args([*args, "--tile-size", "64", "--overlap", "16", "--device", "cpu"]))


def test_16bit_in_gives_16bit_out_computed_from_every_bit(tmp_path, gradient):
    from shared.images import image_bit_depth, read_image, save_image

    model, ckpt = _checkpoint(tmp_path)  # perturbed: not the identity, so the model's arithmetic shows
    model.eval()
    source = gradient(96, 112, seed=2)
    deep = save_image(tmp_path / "deep.png", source, bit_depth=16)
    shallow = save_image(tmp_path / "shallow.png", source)  # the same photo as an 8-bit copy
    _infer("--checkpoint", str(ckpt), "--input", str(deep), "--output", str(tmp_path / "deep_out.png"))
    _infer("--checkpoint", str(ckpt), "--input", str(shallow), "--output", str(tmp_path / "shallow_out.png"))
    assert image_bit_depth(tmp_path / "deep_out.png") == 16
    assert image_bit_depth(tmp_path / "shallow_out.png") == 8
    out16 = read_image(tmp_path / "deep_out.png", dtype="float32")
    out8 = read_image(tmp_path / "shallow_out.png", dtype="float32")
    reference, _ = retouch(model, read_image(deep, dtype="float32"), tile_size=64, overlap=16)
    reference = reference.permute(1, 2, 0).numpy()
    err16, err8 = np.abs(out16 - reference).max(), np.abs(out8 - reference).max()
    assert err16 <= 1 / 65535, f"the 16-bit run is the full-precision result to 1 level of 65535, off by {err16}"
    assert err8 > 50 * err16 and err8 > 1 / 1024, (
        f"the 8-bit copy's result loses the sub-8-bit detail: off by {err8 * 255:.2f} 8-bit levels, "
        f"the 16-bit run's by {err16 * 65535:.2f} 16-bit levels")
    assert len(np.unique(out16[..., 0])) > 4 * len(np.unique(out8[..., 0]))  # a smooth ramp, not steps


def test_conversions_are_said_once_per_inference_job(tmp_path, pair_dirs, capsys):
    from PIL import Image

    _, ckpt = _checkpoint(tmp_path, perturb=False)
    original, _ = pair_dirs
    for name in ("img_0", "img_1"):
        Image.open(original / f"{name}.png").convert("L").save(original / f"{name}.png")
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(original / "colour.png")
    written = _infer("--checkpoint", str(ckpt), "--input", str(original), "--output", str(tmp_path / "out"))
    assert len(written) == 3 and all(Image.open(p).mode == "RGB" for p in written)
    err = capsys.readouterr().err
    line = f"note: grayscale images read as RGB: 2 of 3 (first: {original / 'img_0.png'})"
    assert err.count("grayscale images read as RGB") == 1 and line in err, err


def test_evaluate_scores_16bit_pairs_at_full_precision(tmp_path, gradient):
    from abpn_retouch.evaluate import build_parser, evaluate
    from shared.images import save_image

    _, ckpt = _checkpoint(tmp_path, perturb=False)
    original, retouched = tmp_path / "original", tmp_path / "retouch"
    source = gradient(64, 64, seed=4)
    save_image(original / "deep.png", source, bit_depth=16)
    save_image(retouched / "deep.png", source + 0.001, bit_depth=16)  # a quarter of an 8-bit level everywhere
    data = evaluate(build_parser().parse_args([
        "--checkpoint", str(ckpt), "--image-dir", str(original), "--gt-dir", str(retouched),
        "--output", str(tmp_path / "m.json"), "--tile-size", "64", "--overlap", "16", "--device", "cpu"]))
    # 20·log10(1 / 0.001) = 60 dB; 8-bit reads would see 0 or 1 level of difference, not 0.001.
    assert data["mean"]["psnr_input"] == pytest.approx(60.0, abs=0.05)
