"""Evaluate a trained ABPN: PSNR/SSIM vs retouched targets, mask IoU/Dice vs GT masks.

Usage::

    uv run --package abpn_retouch evaluate.py --checkpoint dc_newarchnew/best.pth --image-dir original/ --gt-dir retouch/ --output metrics.json

Inference is single-process; training under DDP is ``uv run torchrun --nproc_per_node 2 trainer.py ...``.
"""

from abpn_retouch.evaluate import cli

if __name__ == "__main__":
    cli()
