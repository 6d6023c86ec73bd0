"""Export a trained ABPN for CPU serving: ONNX (ONNX Runtime) or OpenVINO IR, fp32 or calibrated int8.

Both files keep the network's two outputs, ``image`` ``(N, 3, H, W)`` and ``mask_logits``
``(N, 1, H/2, W/2)``, with batch, height and width dynamic, and record the tile multiple the network
needs (``abpn_multiple``): the exported graph has no padding step, so every tile must already be a multiple.
int8 activation ranges come from random crops of real photos read and scaled exactly as inference reads
them (``0..1`` float, 16-bit files with all their bits).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from abpn_retouch.data import read_full_precision
from abpn_retouch.infer import MULTIPLE_KEY, OUTPUT_NAMES, _require, load_model, open_runtime
from abpn_retouch.model import ABPN
from shared.errors import ConfigError, DataError, cli_entry
from shared.images import list_images, to_tensor
from shared.metrics import psnr
from shared.runtimes import INPUT_NAME, ONNX_OPSET, calibration_batches, openvino_model, quantize_onnx_int8

FORMATS = ("onnx", "openvino")
SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}


def export_onnx(model: ABPN, path: str | Path, example_size: int = 64, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as fp32 ONNX with outputs ``image`` and ``mask_logits`` and the tile multiple.

    The TorchScript exporter records the U-Net's resizes as shape ops, so one file serves every tile
    size that is a multiple of ``model.multiple``. The file appears only once complete.
    """
    onnx = _require("onnx", "onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    size = -(-example_size // model.multiple) * model.multiple  # the traced graph must skip the padding branch
    example = torch.rand(1, 3, size, size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on the shape branches, which tiles never take
        torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAMES[0]: dynamic,
                                        OUTPUT_NAMES[1]: {0: "batch", 2: "half_height", 3: "half_width"}},
                          opset_version=opset, dynamo=False)
    proto = onnx.load(str(tmp))
    onnx.helper.set_model_props(proto, {MULTIPLE_KEY: str(model.multiple)})
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def export_openvino(model: ABPN, path: str | Path, batches: Sequence[np.ndarray] | None = None) -> Path:
    """Write an OpenVINO IR (``path`` ``.xml`` + ``.bin``), int8 through NNCF when ``batches`` are given.

    Made from the ONNX graph (:func:`shared.runtimes.openvino_model` reads it in well under a second;
    OpenVINO's PyTorch frontend takes ~20 s here) with the same outputs. Weights are stored in fp32:
    ``ov.save_model`` would halve them to fp16 by default, which moves the mask logits by ~1e-4.
    """
    ov = _require("openvino", "openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"{path}: an OpenVINO model is written as a .xml file (with its .bin beside it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.xml")
    with tempfile.TemporaryDirectory() as scratch:  # the IR is saved before the ONNX file it was read from goes
        ir = openvino_model(export_onnx(model, Path(scratch) / "model.onnx"), batches=batches)
        for output, name in zip(ir.outputs, OUTPUT_NAMES, strict=True):
            output.get_tensor().set_names({name})
        ir.set_rt_info(str(model.multiple), [MULTIPLE_KEY])
        ov.save_model(ir, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)
    return path


def calibration_images(folder: str | Path, crop: int) -> list[torch.Tensor]:
    """Every photo in ``folder`` at least ``crop`` px on each side, as inference reads it, ``(3, H, W)`` 0..1."""
    images, small = [], []
    for file in list_images(folder):
        image = to_tensor(read_full_precision(file))
        (images if min(image.shape[-2:]) >= crop else small).append(image)
    if not images:
        raise DataError(f"{folder}: no image is at least {crop}×{crop} px for the calibration crops "
                        f"({len(small)} smaller): lower --calibration-size")
    return images


def export(checkpoint: str | Path, output: str | Path, fmt: str = "onnx", precision: str = "fp32",
           calibration_dir: str | Path | None = None, calibration_size: int = 256, calibration_count: int = 32,
           seed: int = 0) -> tuple[Path, ABPN, list[np.ndarray]]:
    """Export ``checkpoint``; returns the file, the PyTorch model and the calibration crops (int8 only)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"--precision {precision}: exported files are fp32 or int8 (bf16 is a runtime choice: "
                          "infer.py --backend openvino --precision bf16 on an fp32 file)")
    if (precision == "int8") != (calibration_dir is not None):
        raise ConfigError("--precision int8 needs --calibration-dir (real photos for the activation ranges)"
                          if precision == "int8" else "--calibration-dir is only used with --precision int8")
    output = Path(output)
    if output.suffix != SUFFIX[fmt]:
        raise ConfigError(f"{output}: --format {fmt} writes a {SUFFIX[fmt]} file")
    model = load_model(checkpoint, torch.device("cpu"))
    batches: list[np.ndarray] = []
    if precision == "int8":
        if calibration_size % model.multiple:
            raise ConfigError(f"--calibration-size {calibration_size} must be a multiple of {model.multiple} "
                              "for this model")
        images = calibration_images(calibration_dir, calibration_size)
        batches = calibration_batches(images, calibration_size, calibration_count, seed)
    if fmt == "openvino":
        return export_openvino(model, output, batches or None), model, batches
    if precision == "fp32":
        return export_onnx(model, output), model, batches
    with tempfile.TemporaryDirectory() as scratch:
        source = export_onnx(model, Path(scratch) / "model.onnx")
        return quantize_onnx_int8(source, output, batches), model, batches


def compare(model: ABPN, path: Path, backend: str, precision: str, inputs: Sequence[torch.Tensor]) -> str:
    """One line comparing the exported file with the PyTorch fp32 model on ``inputs``."""
    runtime = open_runtime(path, backend, precision)
    image_diff, mask_diff, psnrs = 0.0, 0.0, []
    with torch.inference_mode():
        for x in inputs:
            (ref_image, ref_logits), (image, logits) = model(x), runtime(x)
            image_diff = max(image_diff, float((image - ref_image).abs().max()))
            mask_diff = max(mask_diff, float((torch.sigmoid(logits) - torch.sigmoid(ref_logits)).abs().max()))
            psnrs.append(float(psnr(image.clamp(0, 1), ref_image.clamp(0, 1)).mean()))
    if precision == "int8":
        return (f"{backend} int8 vs PyTorch fp32 on {len(inputs)} calibration crops: image PSNR "
                f"{np.mean(psnrs):.2f} dB, mask max |diff| {mask_diff:.3f}")
    sizes = " and ".join(f"{x.shape[-1]}×{x.shape[-2]}" for x in inputs)
    return f"{backend} vs PyTorch on {sizes}: image max |diff| {image_diff:.2e}, mask max |diff| {mask_diff:.2e}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abpn-export", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Export an ABPN checkpoint for CPU serving (ONNX Runtime or OpenVINO, fp32 or int8).")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (best.pth / latest.pth)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="onnx (ONNX Runtime) or openvino (IR)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                        help="fp32, or int8 with activation ranges calibrated on --calibration-dir")
    parser.add_argument("--output", help="file to write (default: model.onnx, or model.xml + model.bin)")
    parser.add_argument("--calibration-dir", help="folder of real original photos for int8 calibration")
    parser.add_argument("--calibration-size", type=int, default=256, help="side of the calibration crops")
    parser.add_argument("--calibration-count", type=int, default=32, help="number of calibration crops")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop positions")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="compare the exported file with PyTorch (fp32: two tile sizes; int8: the crops)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = args.output or f"model{SUFFIX[args.format]}"
    if args.calibration_count < 1:
        raise ConfigError(f"--calibration-count must be >= 1, got {args.calibration_count}")
    path, model, batches = export(args.checkpoint, output, args.format, args.precision, args.calibration_dir,
                                  args.calibration_size, args.calibration_count, args.seed)
    size = sum(p.stat().st_size for p in ([path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]))
    print(f"wrote {path} ({args.format} {args.precision}, {size / 1e6:.1f} MB)")
    if args.verify:
        backend = "onnxruntime" if args.format == "onnx" else "openvino"
        m = model.multiple
        inputs = ([torch.from_numpy(b) for b in batches[:8]] if args.precision == "int8" else
                  [torch.rand(2, 3, 8 * m, 8 * m, generator=torch.Generator().manual_seed(0)),
                   torch.rand(1, 3, 16 * m, 12 * m, generator=torch.Generator().manual_seed(1))])
        print(compare(model, path, backend, args.precision, inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
