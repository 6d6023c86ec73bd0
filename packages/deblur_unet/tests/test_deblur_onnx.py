"""ONNX export (the optional ``onnx`` extra): onnxruntime agrees with PyTorch, tiled, at any size."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from deblur_unet.export import export_onnx, verify  # noqa: E402
from deblur_unet.inference import OnnxDeblurrer, TilingOptions, deblur_image  # noqa: E402
from deblur_unet.model import DeblurUNet  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = DeblurUNet(base_ch=8).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def test_onnx_has_dynamic_size_and_matches_pytorch(exported):
    model, path = exported
    assert verify(model, path, size=(67, 45)) < 1e-4
    assert verify(model, path, size=(96, 128)) < 1e-4


def _agree_tiled(exported, size, tile, overlap):
    model, path = exported
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    options = TilingOptions(tile_size=tile, overlap=overlap, batch_size=4)
    torch_out = deblur_image(model, image, tile, overlap, 4)
    onnx_out = OnnxDeblurrer(path, options)(image)
    assert onnx_out.shape == torch_out.shape == image.shape
    # uint8 outputs: float differences of ~1e-6 can only flip a rounding by one level
    assert np.abs(onnx_out.astype(int) - torch_out.astype(int)).max() <= 1


def test_onnxruntime_and_pytorch_agree_tiled_small(exported):
    _agree_tiled(exported, (150, 203), 64, 16)


@pytest.mark.slow
def test_onnxruntime_and_pytorch_agree_on_tiled_2048(exported):
    _agree_tiled(exported, (2048, 2048), 512, 64)


def test_export_cli_and_onnx_inference(exported, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from deblur_unet.model import DeblurUNet as Net
    from shared.checkpoint import make_training_state, save_checkpoint

    pkg = Path(__file__).resolve().parents[1]
    model = Net(base_ch=8)
    ckpt = save_checkpoint(tmp_path / "m.pth", make_training_state(
        kind="deblur_unet", epoch=1, global_step=1, objects={"model": model},
        extra={"model_config": model.config()}))
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "export.py", "--checkpoint", ckpt, "--output", tmp_path / "m.onnx"],
                          cwd=pkg, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "max |diff|" in proc.stdout
    Image.fromarray(np.zeros((33, 70, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    proc = subprocess.run([sys.executable, "inference.py", "--onnx", tmp_path / "m.onnx", "--input", tmp_path / "x.png",
                           "--output", tmp_path / "y.png", "--tile-size", "32", "--overlap", "8"],
                          cwd=pkg, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "y.png").size == (70, 33)
