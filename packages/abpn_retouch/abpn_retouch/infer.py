"""Full-resolution retouching of a file or a folder, tile by tile with blended overlaps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from abpn_retouch.data import read_full_precision
from abpn_retouch.model import ABPN
from shared.amp import PRECISIONS
from shared.checkpoint import load_checkpoint
from shared.cli import Job, resolve_jobs, run_jobs
from shared.device import DEVICE_CHOICES, resolve_device
from shared.errors import ConfigError, cli_entry
from shared.images import (
    SIXTEEN_BIT_SUFFIXES,
    describe_conversions,
    image_bit_depth,
    save_image,
    to_numpy_image,
    to_tensor,
)
from shared.tiling import tiled_forward


def load_model(checkpoint: str | Path, device: torch.device) -> ABPN:
    """The ABPN recorded in a training checkpoint (``latest.pth``/``best.pth``), in eval mode."""
    from abpn_retouch.train import build_model_from_checkpoint

    model = build_model_from_checkpoint(load_checkpoint(checkpoint))
    return model.to(device).eval()


def retouch(model: ABPN, image: np.ndarray, tile_size: int = 1024, overlap: int = 256, batch_size: int = 1,
            device: torch.device | None = None, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 (or float in 0..1) → retouched ``(3, H, W)`` and mask probabilities
    ``(1, H/2, W/2)`` (CPU, 0..1).

    The image stays in CPU memory; tiles travel to ``device`` ``batch_size`` at a time.
    """
    x = to_tensor(image)
    output, logits = tiled_forward(lambda t: model(t), x, tile_size=tile_size, overlap=overlap,
                                   batch_size=batch_size, device=device, precision=precision)
    return output.clamp_(0, 1), torch.sigmoid(logits)


def _check_tiling(tile_size: int, overlap: int, multiple: int) -> None:
    if tile_size % multiple:
        raise ConfigError(f"--tile-size {tile_size} must be a multiple of {multiple} for this model")
    if not 0 <= overlap < tile_size or overlap % 2:
        raise ConfigError(f"--overlap must be even and in [0, --tile-size), got {overlap}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Retouch photos at full resolution with a trained ABPN.")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (latest.pth / best.pth)")
    parser.add_argument("--input", required=True, help="image file or folder of images")
    parser.add_argument("--output", required=True,
                        help="output .png (or .tif) for one input file, else a folder of <name>.png (and "
                             "<name>_mask.png); 16-bit inputs give 16-bit .png/.tif outputs")
    parser.add_argument("--save-mask", action="store_true", help="also write the predicted mask, full size")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile side in pixels (default: 1024)")
    parser.add_argument("--overlap", type=int, default=256, help="tile overlap in pixels (default: 256)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default: 1)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="autocast precision (default: fp32)")
    return parser


def run(args: argparse.Namespace) -> list[Path]:
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, device)
    _check_tiling(args.tile_size, args.overlap, model.multiple)

    jobs = resolve_jobs(args.input, args.output)
    for line in describe_conversions([job.source for job in jobs], keep_16bit=all(map(_keeps_16bit, jobs))):
        print(f"note: {line}", file=sys.stderr)

    def process(job: Job) -> list[Path]:
        # A 16-bit file is read as float32 with all its bits and written back with 16 bits.
        bit_depth = image_bit_depth(job.source)
        image = read_full_precision(job.source, bit_depth == 16)
        output, mask = retouch(model, image, args.tile_size, args.overlap, args.batch_size, device, args.precision)
        written = [save_image(job.target, output, bit_depth=16 if bit_depth == 16 and _keeps_16bit(job) else 8)]
        if args.save_mask:
            full = F.interpolate(mask[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
            written.append(save_image(job.target.with_name(f"{job.target.stem}_mask.png"), to_numpy_image(full)))
        return written

    return run_jobs(jobs, process)


def _keeps_16bit(job: Job) -> bool:
    """Whether the output's format holds 16 bits (a ``--output x.jpg`` does not)."""
    return job.target.suffix.lower() in SIXTEEN_BIT_SUFFIXES


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    """Console script ``abpn-infer`` (same flags as ``infer.py``)."""
    run(build_parser().parse_args(argv))
