"""Export a DeblurUNet checkpoint to ONNX (dynamic batch/height/width); needs the ``onnx`` extra.

Usage (from packages/deblur_unet):
    uv run --package deblur_unet --extra onnx export.py --checkpoint checkpoints/best.pth --output model.onnx
    uv run --package deblur_unet inference.py --onnx model.onnx --input blurry.png --output sharp.png
"""

from deblur_unet.export import main

if __name__ == "__main__":
    raise SystemExit(main())
