"""Evaluate a checkpoint: PSNR, SSIM and L1 over the hole (and PSNR/SSIM of the whole image).

Usage (from packages/gansformer_inpaint):
    uv run --package gansformer_inpaint evaluate.py --checkpoint checkpoints/best.pth \\
        --data-root ../../../shared/data/inpainting --output metrics.json
    (single process; torchrun --nproc_per_node 2 main.py ... is the distributed training command)
"""

from gansformer_inpaint.cli import evaluate_entry

if __name__ == "__main__":
    evaluate_entry()
