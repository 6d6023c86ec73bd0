"""Evaluate a checkpoint on a folder of pairs: PSNR/SSIM vs the retouched target beside the untouched
original's (the trivial baseline), mask IoU/Dice vs the GT mask and that mask's coverage."""

from __future__ import annotations

import argparse
import sys

import torch

from abpn_retouch.data import PAIR_EXTENSIONS, read_full_precision
from abpn_retouch.infer import _check_tiling, load_model, retouch
from abpn_retouch.masks import MASK_REFERENCES, MaskRecipe, coverage, generate_gt_mask
from abpn_retouch.metrics import mask_iou_dice
from abpn_retouch.model import ABPN
from shared.amp import PRECISIONS
from shared.cli import report_metrics
from shared.device import DEVICE_CHOICES, resolve_device
from shared.errors import DataError, cli_entry
from shared.images import describe_conversions, image_bit_depth, pair_by_stem, to_tensor
from shared.metrics import psnr, ssim

COLUMNS = ("psnr", "ssim", "psnr_input", "ssim_input", "mask_iou", "mask_dice", "mask_coverage")
_RECIPE = MaskRecipe()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="PSNR/SSIM and mask IoU/Dice of a trained ABPN on pairs.")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint")
    parser.add_argument("--image-dir", required=True, help="folder of original photos")
    parser.add_argument("--gt-dir", required=True, help="folder of retouched photos (same base names)")
    parser.add_argument("--output", default="metrics.json", help="metrics JSON path (default: metrics.json)")
    parser.add_argument("--magnifier", type=float, default=_RECIPE.magnifier,
                        help=f"GT mask magnifier (default: {_RECIPE.magnifier:g}; the spec's: 5)")
    parser.add_argument("--mask-threshold", type=float, default=_RECIPE.mask_threshold,
                        help=f"GT mask threshold (default: {_RECIPE.mask_threshold:g}; the spec's: 3)")
    parser.add_argument("--mask-reference", default=_RECIPE.reference, choices=MASK_REFERENCES,
                        help=f"GT mask compares the retouch with (default: {_RECIPE.reference}; the spec's: input)")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile side (default: 1024)")
    parser.add_argument("--overlap", type=int, default=256, help="tile overlap (default: 256)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="autocast precision (default: fp32)")
    return parser


@torch.no_grad()
def score_pair(model: ABPN, image, target, recipe: MaskRecipe, tile_size: int = 1024, overlap: int = 256,
               device: torch.device | None = None, precision: str = "fp32") -> tuple[dict[str, float], torch.Tensor]:
    """The metrics of one pair (both ``uint8``, or both float in 0..1) and the model's output ``(3, H, W)`` in 0..1.

    ``psnr``/``ssim``: the model's output; ``psnr_input``/``ssim_input``: the untouched original's (doing
    nothing, the baseline a retouching model must beat); mask IoU/Dice of the predicted mask against the
    GT mask, and the fraction that GT mask covers (an IoU means little when the mask covers everything).
    """
    if image.shape != target.shape:
        raise DataError(f"retouched size {target.shape[:2]} differs from the original's {image.shape[:2]}")
    output, mask = retouch(model, image, tile_size, overlap, 1, device, precision)
    gt_mask_np = generate_gt_mask(image, target, recipe)
    gt_mask = torch.from_numpy(gt_mask_np)[None]
    target_t, image_t = to_tensor(target)[None], to_tensor(image)[None]
    iou, dice = mask_iou_dice(mask[..., : gt_mask.shape[-2], : gt_mask.shape[-1]], gt_mask)
    return {
        "psnr": psnr(output[None], target_t).item(), "ssim": ssim(output[None], target_t).item(),
        "psnr_input": psnr(image_t, target_t).item(), "ssim_input": ssim(image_t, target_t).item(),
        "mask_iou": iou, "mask_dice": dice, "mask_coverage": coverage(gt_mask_np),
    }, output


def evaluate(args: argparse.Namespace) -> dict:
    """Score every pair, write ``args.output`` and print the table; the JSON data."""
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, device)
    _check_tiling(args.tile_size, args.overlap, model.multiple)
    recipe = MaskRecipe(magnifier=args.magnifier, mask_threshold=args.mask_threshold,
                        reference=args.mask_reference)
    per_image: dict[str, dict[str, float]] = {}
    pairs = pair_by_stem(args.image_dir, args.gt_dir, PAIR_EXTENSIONS)
    for line in describe_conversions([path for pair in pairs for path in pair], keep_16bit=True):
        print(f"note: {line}", file=sys.stderr)
    for image_path, gt_path in pairs:
        # Both at float32 when either is 16-bit: the metrics then see every bit of the 16-bit side.
        full = image_bit_depth(image_path) == 16 or image_bit_depth(gt_path) == 16
        image, target = read_full_precision(image_path, full), read_full_precision(gt_path, full)
        if image.shape != target.shape:
            raise DataError(f"{gt_path}: size {target.shape[:2]} differs from {image_path} {image.shape[:2]}")
        per_image[image_path.stem], _ = score_pair(model, image, target, recipe, args.tile_size, args.overlap,
                                                   device, args.precision)
    mean = {k: sum(m[k] for m in per_image.values()) / len(per_image) for k in COLUMNS}
    return report_metrics(args.output, mean, per_image, rows_key="images", extra={"checkpoint": str(args.checkpoint)},
                          columns=COLUMNS)


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    """Console script ``abpn-eval`` (same flags as ``evaluate.py``)."""
    evaluate(build_parser().parse_args(argv))
