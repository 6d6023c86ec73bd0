"""Train GANsformer face inpainting.

Usage (from packages/gansformer_inpaint):
    uv run --package gansformer_inpaint main.py --data-root dataset/celeba_hq_256 --epochs 3 --batch-size 16
    uv run --package gansformer_inpaint main.py --synthetic --epochs 1 --batch-size 2 --no-wandb
    uv run --package gansformer_inpaint main.py --resume checkpoints/latest.pth
    torchrun --nproc_per_node 2 main.py --data-root dataset/celeba_hq_256 --batch-size 8
"""

from gansformer_inpaint.cli import train_entry

if __name__ == "__main__":
    train_entry()
