"""Evaluate a checkpoint on a folder of pairs: PSNR/SSIM vs the retouched target, mask IoU/Dice vs GT mask."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from abpn_retouch.data import PAIR_EXTENSIONS
from abpn_retouch.infer import _check_tiling, load_model, retouch
from abpn_retouch.masks import MaskRecipe, generate_gt_mask
from abpn_retouch.metrics import mask_iou_dice, psnr, ssim
from shared.amp import PRECISIONS
from shared.device import DEVICE_CHOICES, resolve_device
from shared.errors import DataError, cli_entry
from shared.images import pair_by_stem, read_image, to_tensor

COLUMNS = ("psnr", "ssim", "psnr_input", "mask_iou", "mask_dice")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="PSNR/SSIM and mask IoU/Dice of a trained ABPN on pairs.")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint")
    parser.add_argument("--image-dir", required=True, help="folder of original photos")
    parser.add_argument("--gt-dir", required=True, help="folder of retouched photos (same base names)")
    parser.add_argument("--output", default="metrics.json", help="metrics JSON path (default: metrics.json)")
    parser.add_argument("--magnifier", type=float, default=5.0, help="GT mask magnifier (default: 5.0)")
    parser.add_argument("--mask-threshold", type=float, default=3.0, help="GT mask threshold (default: 3)")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile side (default: 1024)")
    parser.add_argument("--overlap", type=int, default=256, help="tile overlap (default: 256)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="autocast precision (default: fp32)")
    return parser


def evaluate(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, device)
    _check_tiling(args.tile_size, args.overlap, model.multiple)
    recipe = MaskRecipe(magnifier=args.magnifier, mask_threshold=args.mask_threshold)
    per_image: dict[str, dict[str, float]] = {}
    for image_path, gt_path in pair_by_stem(args.image_dir, args.gt_dir, PAIR_EXTENSIONS):
        image, target = read_image(image_path), read_image(gt_path)
        if image.shape != target.shape:
            raise DataError(f"{gt_path}: size {target.shape[:2]} differs from {image_path} {image.shape[:2]}")
        output, mask = retouch(model, image, args.tile_size, args.overlap, 1, device, args.precision)
        gt_mask = torch.from_numpy(generate_gt_mask(image, target, recipe))[None]
        target_t, image_t = to_tensor(target)[None], to_tensor(image)[None]
        iou, dice = mask_iou_dice(mask[..., : gt_mask.shape[-2], : gt_mask.shape[-1]], gt_mask)
        per_image[image_path.stem] = {
            "psnr": psnr(output[None], target_t), "ssim": ssim(output[None], target_t),
            "psnr_input": psnr(image_t, target_t), "mask_iou": iou, "mask_dice": dice,
        }
    mean = {k: sum(m[k] for m in per_image.values()) / len(per_image) for k in COLUMNS}
    return {"checkpoint": str(args.checkpoint), "mean": mean, "images": per_image}


def format_table(result: dict) -> str:
    rows = [("image", *COLUMNS)]
    for name, metrics in [*result["images"].items(), ("MEAN", result["mean"])]:
        rows.append((name, *(f"{metrics[k]:.4f}" if math.isfinite(metrics[k]) else "inf" for k in COLUMNS)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    """Console script ``abpn-eval`` (same flags as ``evaluate.py``)."""
    args = build_parser().parse_args(argv)
    result = evaluate(args)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # JSON has no inf: identical pairs would give PSNR inf, written as null.
    safe = json.loads(json.dumps(result, default=str).replace("Infinity", "null"))
    out.write_text(json.dumps(safe, indent=2))
    print(format_table(result))
    print(f"wrote {out}", file=sys.stderr)
