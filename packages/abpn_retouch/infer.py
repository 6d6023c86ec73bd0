"""Retouch photos at full resolution with a trained ABPN.

Usage::

    uv run --package abpn_retouch infer.py --checkpoint dc_newarchnew/best.pth --input photo.jpg --output out/ --save-mask

Inference is single-process; training under DDP is ``uv run torchrun --nproc_per_node 2 trainer.py ...``.
"""

from abpn_retouch.infer import cli

if __name__ == "__main__":
    cli()
