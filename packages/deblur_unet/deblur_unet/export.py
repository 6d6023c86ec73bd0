"""Export a trained DeblurUNet for CPU serving: ONNX or OpenVINO IR, fp32 or int8 calibrated on real photos.

Every file has a dynamic batch, height and width, so one file serves every tile size. int8 is static
quantisation: activation ranges come from random ``--tile-size`` crops of the blurry photos in
``--calibration-dir``, normalised exactly as inference normalises them (ONNX Runtime's QDQ quantiser for
``.onnx``, NNCF for OpenVINO).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from deblur_unet.data import to_model_range
from deblur_unet.inference import load_model
from shared import runtimes
from shared.errors import ConfigError, DataError, cli_entry
from shared.images import image_bit_depth, list_images, read_image

OPSET = runtimes.ONNX_OPSET
FORMATS = {"onnx": ".onnx", "openvino": ".xml"}


def export_onnx(model: torch.nn.Module, output: str | Path, sample_size: int = 64, opset: int = OPSET) -> Path:
    """Write ``model`` (in [-1, 1] → out) as ONNX with input ``input`` ``(N, 3, H, W)``, all three dynamic.

    The legacy TorchScript exporter is used: it records the U-Net's size-dependent skip alignment as
    shape ops, so one file serves every tile size. A failed export leaves no half-written file.
    """
    return runtimes.export_onnx(model, output, torch.randn(1, 3, sample_size, sample_size), opset)


def calibration_files(folder: str | Path, count: int) -> list[Path]:
    """Up to ``count`` blurry photos spread evenly over ``folder``'s: ``blur/``, ``<sequence>/blur/`` (GoPro's
    ``train/``) or the images in ``folder`` itself."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: calibration folder not found")
    if (root / "blur").is_dir():
        folders = [root / "blur"]
    else:
        folders = sorted(d / "blur" for d in root.iterdir() if (d / "blur").is_dir()) or [root]
    files = [f for d in folders for f in list_images(d)]
    step = max(1, len(files) // count)
    return files[::step][:count]


def calibration_images(folder: str | Path, count: int, tile_size: int) -> list[torch.Tensor]:
    """The photos of :func:`calibration_files` as model inputs ``(3, H, W)`` in [-1, 1], read as inference
    reads them (16-bit files at full precision)."""
    images = []
    for path in calibration_files(folder, count):
        array = read_image(path, dtype="float32" if image_bit_depth(path) == 16 else "uint8")
        if min(array.shape[:2]) < tile_size:
            raise DataError(f"{path}: {array.shape[1]}×{array.shape[0]} is smaller than the {tile_size}-px "
                            "calibration tile (--tile-size)")
        images.append(to_model_range(array))
    return images


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deblur-export", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Export a DeblurUNet checkpoint to ONNX or OpenVINO (dynamic H "
                                                 "and W), fp32 or int8 calibrated on real photos.")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (best.pth / latest.pth)")
    parser.add_argument("--output", default=None,
                        help="file to write: .onnx, or .xml for OpenVINO (its .bin beside it) (default: model.onnx "
                             "or model.xml after --format)")
    parser.add_argument("--format", choices=tuple(FORMATS), default=None,
                        help="onnx (onnxruntime, or OpenVINO reading ONNX) or openvino IR (default: from --output's "
                             "suffix, else onnx)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="int8: static quantisation calibrated on --calibration-dir")
    parser.add_argument("--calibration-dir", default=None,
                        help="int8: photos to calibrate on: a data folder (blur/, or <sequence>/blur/) or a folder of "
                             "blurry images")
    parser.add_argument("--calibration-tiles", type=int, default=32, help="int8: random crops to calibrate on")
    parser.add_argument("--tile-size", type=int, default=512,
                        help="int8: side of the calibration crops; use inference's --tile-size")
    parser.add_argument("--seed", type=int, default=0, help="int8: seed of the crop positions")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="run the written file and print its difference to PyTorch fp32")
    return parser


def verify(model: torch.nn.Module, path: Path, size: tuple[int, int] = (96, 80)) -> float:
    """Max absolute difference between onnxruntime and PyTorch on a random ``size`` input."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    return float(np.abs(got - expected).max())


def compare(model: torch.nn.Module, path: Path, backend: str, precision: str, x: torch.Tensor) -> tuple[float, float]:
    """Mean and max |difference| between the written file, run by ``backend``, and PyTorch fp32 on ``x``."""
    got = runtimes.open_runtime(path, backend, precision)(x)
    with torch.inference_mode():
        expected = model(x)
    diff = (got - expected).abs()
    return float(diff.mean()), float(diff.max())


def _check(args: argparse.Namespace) -> tuple[str, Path]:
    output = Path(args.output) if args.output else None
    fmt = args.format or ("openvino" if output is not None and output.suffix == ".xml" else "onnx")
    output = output or Path(f"model{FORMATS[fmt]}")
    if output.suffix != FORMATS[fmt]:
        raise ConfigError(f"{output}: --format {fmt} writes a {FORMATS[fmt]} file")
    if args.precision == "int8":
        if not args.calibration_dir:
            raise ConfigError("--precision int8 needs --calibration-dir DIR: photos to take activation ranges from")
        if args.calibration_tiles < 1:
            raise ConfigError(f"--calibration-tiles must be >= 1, got {args.calibration_tiles}")
        if args.tile_size < 16 or args.tile_size % 16:
            raise ConfigError(f"--tile-size must be a multiple of 16 (>= 16), got {args.tile_size}")
    elif args.calibration_dir:
        raise ConfigError("--calibration-dir calibrates int8: add --precision int8")
    return fmt, output


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fmt, output = _check(args)
    model = load_model(args.checkpoint, "cpu")
    batches = None
    if args.precision == "int8":
        images = calibration_images(args.calibration_dir, args.calibration_tiles, args.tile_size)
        batches = runtimes.calibration_batches(images, args.tile_size, args.calibration_tiles, args.seed)
        print(f"calibrating int8 on {len(batches)} crops of {args.tile_size}² from {len(images)} photos "
              f"in {args.calibration_dir}")
    example = torch.randn(1, 3, 64, 64)
    if fmt == "onnx" and batches is None:
        path = runtimes.export_onnx(model, output, example, args.opset)
    elif fmt == "onnx":
        with tempfile.TemporaryDirectory() as tmp:
            float_path = runtimes.export_onnx(model, Path(tmp) / "fp32.onnx", example, args.opset)
            path = runtimes.quantize_onnx_int8(float_path, output, batches)
    else:
        path = runtimes.export_openvino(model, output, example, batches)
    size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
    print(f"wrote {path} ({fmt}, {args.precision}, {size / 1e6:.1f} MB)")
    if args.verify:
        backend = "onnxruntime" if fmt == "onnx" else "openvino"
        if batches is not None:
            x, what = torch.from_numpy(batches[0]), f"a {args.tile_size}² calibration crop"
        else:
            x, what = torch.randn(2, 3, 96, 80), "a random 96×80 input"
        try:
            mean, worst = compare(model, path, backend, args.precision, x)
        except ConfigError as exc:
            if "install the extra" not in str(exc):
                raise
            print(f"skipped verification: {exc}")
        else:
            print(f"{backend} {args.precision} vs PyTorch fp32 on {what}: mean |diff| = {mean:.2e}, "
                  f"max |diff| = {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
