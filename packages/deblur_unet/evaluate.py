"""PSNR/SSIM of model output and of the blurry input against sharp, on a folder of pairs (JSON + table).

Usage (from packages/deblur_unet):
    uv run --package deblur_unet evaluate.py --checkpoint checkpoints/best.pth \
        --data-dir ../../../shared/data/deblur --output eval_results.json
    uv run --package deblur_unet evaluate.py --onnx model.onnx --data-dir GOPRO_Large/test
"""

from deblur_unet.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
