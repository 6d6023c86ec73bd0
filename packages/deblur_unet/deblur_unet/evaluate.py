"""PSNR/SSIM of the model's output, and of the blurry input, against the sharp images of a pair folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblur_unet.data import find_pairs, read_full_precision, to_unit_array
from deblur_unet.inference import Deblurrer, OnnxDeblurrer, TilingOptions, load_model
from shared.cli import report_metrics
from shared.device import DEVICE_CHOICES
from shared.errors import DataError, cli_entry
from shared.images import describe_conversions, save_image
from shared.metrics import psnr, ssim
from shared.tiling import BLEND_MODES


def _unit(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(to_unit_array(image)).permute(2, 0, 1).unsqueeze(0)


def image_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR (dB, capped at 100 for identical images) and SSIM of two ``(H, W, 3)`` images (uint8, or
    float in 0..1 for 16-bit files)."""
    p, t = _unit(prediction), _unit(target)
    return {"psnr": float(psnr(p, t)[0]), "ssim": float(ssim(p, t)[0])}


KEYS = ("psnr", "ssim", "input_psnr", "input_ssim")
LABELS = {"psnr": "PSNR out", "ssim": "SSIM out", "input_psnr": "PSNR in", "input_ssim": "SSIM in"}


def _names(pairs) -> list[str]:
    """File names, or ``<sequence>/<name>`` when GoPro sequences repeat them (``000001.png`` in each)."""
    names = [blur.name for blur, _ in pairs]
    if len(set(names)) == len(names):
        return names
    return [f"{blur.parent.parent.name}/{blur.name}" for blur, _ in pairs]


def evaluate_pairs(engine, pairs,
                   save_dir: Path | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-image metrics of ``engine(blur)`` and of ``blur`` itself against ``sharp``."""
    per_image = {}
    for name, (blur_path, sharp_path) in zip(_names(pairs), pairs, strict=True):
        # 16-bit files at full precision: the metrics see what a 16-bit output keeps.
        blur, sharp = read_full_precision(blur_path), read_full_precision(sharp_path)
        if blur.shape != sharp.shape:
            raise DataError(f"{blur_path}: size {blur.shape[1]}×{blur.shape[0]} differs from its sharp image "
                            f"{sharp_path} ({sharp.shape[1]}×{sharp.shape[0]})")
        output = engine(blur)
        if save_dir is not None:
            save_image((save_dir / name).with_suffix(".png"), output, bit_depth=8 if output.dtype == np.uint8 else 16)
        model_m, input_m = image_metrics(output, sharp), image_metrics(blur, sharp)
        per_image[name] = {"psnr": model_m["psnr"], "ssim": model_m["ssim"],
                           "input_psnr": input_m["psnr"], "input_ssim": input_m["ssim"]}
    mean = {k: float(np.mean([row[k] for row in per_image.values()])) for k in KEYS}
    return mean, per_image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deblur-eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="PSNR/SSIM of deblurred output and of the blurry input vs sharp.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="training checkpoint (best.pth / latest.pth)")
    source.add_argument("--onnx", help="ONNX model from export.py")
    parser.add_argument("--data-dir", required=True,
                        help="pairs: flat blur/ + sharp/, or GoPro <sequence>/blur|sharp (e.g. GOPRO_Large/test)")
    parser.add_argument("--output", default="eval_results.json", help="metrics JSON to write")
    parser.add_argument("--save-images", default=None, help="also write the deblurred PNGs to this folder")
    parser.add_argument("--tile-size", type=int, default=512, help="tile side in pixels")
    parser.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring tiles")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--blend", choices=BLEND_MODES, default="linear", help="tile blending")
    parser.add_argument("--margin", type=int, default=0, help="overlap-tile margin (see inference.py)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="PyTorch device")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = TilingOptions(args.tile_size, args.overlap, args.batch_size, args.blend, args.margin)
    options.validate()
    pairs = find_pairs(args.data_dir)
    for line in describe_conversions([path for pair in pairs for path in pair], keep_16bit=True):
        print(f"note: {line}", file=sys.stderr)
    if args.onnx:
        engine: Any = OnnxDeblurrer(args.onnx, options)
    else:
        engine = Deblurrer(load_model(args.checkpoint, "cpu"), options, args.device)
    mean, per_image = evaluate_pairs(engine, pairs, Path(args.save_images) if args.save_images else None)
    report_metrics(args.output, mean, per_image, extra={"model": args.checkpoint or args.onnx,
                                                        "data_dir": str(args.data_dir)},
                   columns=("input_psnr", "psnr", "input_ssim", "ssim"), labels=LABELS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
