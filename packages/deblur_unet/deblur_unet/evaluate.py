"""PSNR/SSIM of the model's output, and of the blurry input, against the sharp images of a pair folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblur_unet.data import find_pairs
from deblur_unet.inference import Deblurrer, OnnxDeblurrer, TilingOptions, load_model
from deblur_unet.metrics import psnr, ssim
from shared.device import DEVICE_CHOICES
from shared.errors import DataError, cli_entry
from shared.images import read_image, save_image
from shared.tiling import BLEND_MODES


def _unit(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def image_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR (dB, capped at 100 for identical images) and SSIM of two uint8 ``(H, W, 3)`` images."""
    p, t = _unit(prediction), _unit(target)
    return {"psnr": float(psnr(p, t).clamp(max=100.0)[0]), "ssim": float(ssim(p, t)[0])}


def evaluate_pairs(engine, pairs, save_dir: Path | None = None) -> dict[str, Any]:
    """Per-image and mean metrics of ``engine(blur)`` and of ``blur`` itself against ``sharp``."""
    per_image = []
    for blur_path, sharp_path in pairs:
        blur, sharp = read_image(blur_path), read_image(sharp_path)
        if blur.shape != sharp.shape:
            raise DataError(f"{blur_path}: size {blur.shape[1]}×{blur.shape[0]} differs from its sharp image "
                            f"{sharp_path} ({sharp.shape[1]}×{sharp.shape[0]})")
        output = engine(blur)
        if save_dir is not None:
            save_image(save_dir / f"{blur_path.stem}.png", output)
        model_m, input_m = image_metrics(output, sharp), image_metrics(blur, sharp)
        per_image.append({"name": blur_path.name, "psnr": model_m["psnr"], "ssim": model_m["ssim"],
                          "input_psnr": input_m["psnr"], "input_ssim": input_m["ssim"]})
    keys = ("psnr", "ssim", "input_psnr", "input_ssim")
    mean = {k: float(np.mean([row[k] for row in per_image])) for k in keys}
    return {"count": len(per_image), "mean": mean, "per_image": per_image}


def format_table(results: dict[str, Any]) -> str:
    rows = [("image", "PSNR in", "PSNR out", "SSIM in", "SSIM out")]
    for r in results["per_image"]:
        rows.append((r["name"], f"{r['input_psnr']:.2f}", f"{r['psnr']:.2f}", f"{r['input_ssim']:.4f}",
                     f"{r['ssim']:.4f}"))
    m = results["mean"]
    rows.append((f"mean ({results['count']})", f"{m['input_psnr']:.2f}", f"{m['psnr']:.2f}",
                 f"{m['input_ssim']:.4f}", f"{m['ssim']:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


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
    if args.onnx:
        engine: Any = OnnxDeblurrer(args.onnx, options)
    else:
        engine = Deblurrer(load_model(args.checkpoint, "cpu"), options, args.device)
    results = evaluate_pairs(engine, pairs, Path(args.save_images) if args.save_images else None)
    results["model"] = args.checkpoint or args.onnx
    results["data_dir"] = str(args.data_dir)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
