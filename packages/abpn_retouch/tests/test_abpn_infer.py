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
