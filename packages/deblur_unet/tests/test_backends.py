"""Serving backends through the CLIs, in process: export (ONNX / OpenVINO, fp32 / int8 calibrated on
photos) and inference with each backend give images close to PyTorch's; wrong combinations are refused
with one line naming the flag or file, before anything is written."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblur_unet import export, inference
from deblur_unet.model import DeblurUNet
from shared.checkpoint import make_training_state, save_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "deblur"
TILE = ["--tile-size", "64", "--overlap", "16", "--batch-size", "4"]


def _photo_or_synthetic(folder: Path, count: int) -> Path:
    """A calibration folder: the sample GoPro frames when they sit beside the repository, else smooth
    synthetic scenes written as PNGs in the same layout (blur/)."""
    if (DATA / "blur").is_dir():
        return DATA
    (folder / "blur").mkdir(parents=True)
    y, x = np.mgrid[0:120, 0:160] / 160.0
    for i in range(count):
        rgb = np.stack([np.sin(3 * x + i), np.cos(4 * y - i), x * y], axis=-1)
        Image.fromarray(((rgb + 1) * 127.5).clip(0, 255).astype(np.uint8)).save(folder / "blur" / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backends")
    torch.manual_seed(0)
    model = DeblurUNet(base_ch=8, residual=True)
    ckpt = save_checkpoint(tmp / "m.pth", make_training_state(
        kind="deblur_unet", epoch=1, global_step=1, objects={"model": model},
        extra={"model_config": model.config()}))
    calibration = _photo_or_synthetic(tmp / "calibration", 3)
    source = sorted((calibration / "blur").iterdir())[0]
    Image.open(source).convert("RGB").crop((300, 200, 396, 280)).save(tmp / "in.png")  # 96×80
    return {"tmp": tmp, "ckpt": str(ckpt), "calibration": str(calibration), "image": str(tmp / "in.png")}


def _infer(served, name: str, *flags: str) -> np.ndarray:
    out = served["tmp"] / f"{name}.png"
    assert inference.main(["--input", served["image"], "--output", str(out), *TILE, "--threads", "1", *flags]) == 0
    return np.asarray(Image.open(out)).astype(int)


def test_each_backend_writes_an_image_close_to_torch(served, capsys):
    tmp, ckpt = served["tmp"], served["ckpt"]
    assert export.main(["--checkpoint", ckpt, "--output", str(tmp / "m.onnx")]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp / 'm.onnx'} (onnx, fp32" in printed and "onnxruntime fp32 vs PyTorch fp32" in printed
    reference = _infer(served, "torch", "--checkpoint", ckpt)
    runs = {
        "ort_file": ("--backend", "onnxruntime", "--model", str(tmp / "m.onnx")),
        "ort_legacy_flag": ("--onnx", str(tmp / "m.onnx")),
        # (onnxruntime converting a checkpoint in memory: test_python_api_backends)
        "ov_in_memory": ("--backend", "openvino", "--checkpoint", ckpt),
    }
    if importlib_has("openvino"):
        assert export.main(["--checkpoint", ckpt, "--format", "openvino", "--output", str(tmp / "m.xml")]) == 0
        assert "openvino fp32 vs PyTorch fp32" in capsys.readouterr().out
        runs["ov_ir"] = ("--model", str(tmp / "m.xml"))  # the backend follows the suffix
    else:
        runs = {k: v for k, v in runs.items() if not k.startswith("ov_")}
    for name, flags in runs.items():
        got = _infer(served, name, *flags)
        # fp32 everywhere: float differences of ~1e-6 can only flip a rounding by one level
        assert got.shape == reference.shape and np.abs(got - reference).max() <= 1, name


def test_int8_export_from_photos_runs_close_to_fp32(served, capsys):
    tmp, ckpt = served["tmp"], served["ckpt"]
    assert export.main(["--checkpoint", ckpt, "--precision", "int8", "--calibration-dir", served["calibration"],
                        "--calibration-tiles", "4", "--tile-size", "64", "--output", str(tmp / "q.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "calibrating int8 on 4 crops of 64²" in printed and "(onnx, int8" in printed
    assert "onnxruntime int8 vs PyTorch fp32 on a 64² calibration crop: mean |diff|" in printed
    reference = _infer(served, "torch8", "--checkpoint", ckpt)
    # The file's own precision is the default; asking for int8 explicitly gives the same run.
    got = _infer(served, "ort_int8", "--model", str(tmp / "q.onnx"))
    assert np.array_equal(got, _infer(served, "ort_int8_explicit", "--model", str(tmp / "q.onnx"), "--precision", "int8"))
    diff, change = np.abs(got - reference), np.abs(reference - np.asarray(Image.open(served["image"])).astype(int))
    print(f"int8 vs fp32: mean {diff.mean():.2f} levels, 99th percentile {np.percentile(diff, 99):.0f}; "
          f"the model's own change: mean {change.mean():.2f}")
    # A random-weight U-Net changes the photo by tens of levels, with activations that fill the int8
    # range unevenly; int8 must stay well inside that change (a trained model does much better).
    assert 0 < diff.mean() < 0.3 * change.mean() and diff.mean() < 10, (diff.mean(), change.mean())


def test_wrong_combinations_exit_2_with_one_line(served, capsys):
    tmp, ckpt = served["tmp"], served["ckpt"]
    float_onnx = tmp / "float.onnx"
    export.export_onnx(DeblurUNet(base_ch=8), float_onnx)
    (tmp / "weights.bin").write_bytes(b"x")
    cases = [
        (["--checkpoint", ckpt, "--precision", "int8"], "--precision int8 is not a PyTorch path"),
        (["--backend", "onnxruntime", "--checkpoint", ckpt, "--precision", "bf16"], "onnxruntime has no bf16"),
        (["--backend", "openvino", "--checkpoint", ckpt, "--precision", "int8"],
         f"{ckpt}: --precision int8 needs an exported, calibrated model"),
        (["--model", str(float_onnx), "--precision", "int8"], f"{float_onnx}: the file is fp32, not int8"),
        (["--model", str(tmp / "absent.onnx")], f"{tmp / 'absent.onnx'}: model file not found"),
        (["--backend", "onnxruntime", "--model", str(tmp / "weights.bin")],
         f"{tmp / 'weights.bin'}: onnxruntime runs .onnx files"),
        (["--backend", "torch", "--model", str(float_onnx)], "--backend torch runs --checkpoint"),
        (["--onnx", str(float_onnx), "--backend", "openvino"], "--onnx runs under onnxruntime"),
        (["--backend", "onnxruntime", "--checkpoint", ckpt, "--compile"], "--compile applies to --backend torch"),
        (["--model", str(float_onnx), "--precision", "fp16"], "--precision fp16 is a PyTorch autocast precision"),
        (["--model", str(float_onnx), "--norm-stats", "image"], "--norm-stats image needs a PyTorch model"),
    ]
    for flags, message in cases:
        out = tmp / "never.png"
        with pytest.raises(SystemExit) as exit_info:
            inference.main(["--input", served["image"], "--output", str(out), *TILE, *flags])
        stderr = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(stderr) == 1 and message in stderr[0], (flags, stderr)
        assert not out.exists()
    export_cases = [
        (["--precision", "int8", "--output", str(tmp / "x.onnx")], "--precision int8 needs --calibration-dir"),
        (["--format", "openvino", "--output", str(tmp / "x.onnx")], f"{tmp / 'x.onnx'}: --format openvino writes a .xml"),
        (["--calibration-dir", served["calibration"], "--output", str(tmp / "x.onnx")], "add --precision int8"),
        (["--precision", "int8", "--calibration-dir", str(tmp / "nowhere"), "--output", str(tmp / "x.onnx")],
         f"{tmp / 'nowhere'}: calibration folder not found"),
        (["--precision", "int8", "--calibration-dir", served["calibration"], "--tile-size", "2048",
          "--output", str(tmp / "x.onnx")], "is smaller than the 2048-px calibration tile"),
    ]
    for flags, message in export_cases:
        with pytest.raises(SystemExit) as exit_info:
            export.main(["--checkpoint", ckpt, *flags])
        stderr = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(stderr) == 1 and message in stderr[0], (flags, stderr)
        assert not (tmp / "x.onnx").exists()


def test_python_api_backends(served):
    image = np.asarray(Image.open(served["image"]))
    tiling = {"tile_size": 64, "overlap": 16}
    torch_out = inference.Deblurrer.from_checkpoint(served["ckpt"], **tiling)(image)
    runtime = inference.Deblurrer.from_checkpoint(served["ckpt"], backend="onnxruntime", threads=1, **tiling)
    assert isinstance(runtime, inference.RuntimeDeblurrer) and runtime.precision == "fp32"
    assert np.abs(runtime(image).astype(int) - torch_out.astype(int)).max() <= 1


def importlib_has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.slow
def test_openvino_int8_export_and_inference(served, capsys):
    pytest.importorskip("nncf")
    tmp, ckpt = served["tmp"], served["ckpt"]
    assert export.main(["--checkpoint", ckpt, "--format", "openvino", "--precision", "int8", "--calibration-dir",
                        served["calibration"], "--calibration-tiles", "4", "--tile-size", "64",
                        "--output", str(tmp / "q.xml")]) == 0
    assert "openvino int8 vs PyTorch fp32" in capsys.readouterr().out
    diff = np.abs(_infer(served, "ov_int8", "--model", str(tmp / "q.xml"))
                  - _infer(served, "torch_ov8", "--checkpoint", ckpt))
    assert 0 < diff.mean() < 10


@pytest.mark.slow
def test_torch_compile_matches_eager(served):
    reference = _infer(served, "eager", "--checkpoint", served["ckpt"])
    compiled = _infer(served, "compiled", "--checkpoint", served["ckpt"], "--compile")
    assert np.abs(compiled - reference).max() <= 1
