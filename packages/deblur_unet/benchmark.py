"""Time DeblurUNet on CPU: a 256×256 patch and a tiled 2048×2048 image (figures for README.md).

Usage (from packages/deblur_unet):
    uv run --package deblur_unet benchmark.py
    uv run --package deblur_unet benchmark.py --checkpoint checkpoints/best.pth --threads 4 --json bench.json
"""

from deblur_unet.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
