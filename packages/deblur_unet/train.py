"""Train DeblurUNet on blur/sharp pairs.

Usage (from packages/deblur_unet):
    uv run --package deblur_unet train.py --synthetic --epochs 2 --batch-size 2 --patch-size 64
    uv run --package deblur_unet train.py --data-dir ../../../shared/data/deblur --epochs 100
    uv run --package deblur_unet train.py --data-dir GOPRO_Large --resume checkpoints/latest.pth
    uv run --package deblur_unet torchrun --nproc_per_node 2 train.py --data-dir GOPRO_Large --batch-size 4

All flags: ``train.py --help`` or README.md.
"""

from deblur_unet.train import main

if __name__ == "__main__":
    raise SystemExit(main())
