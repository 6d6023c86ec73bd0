"""Export a DeblurUNet checkpoint for CPU serving: ONNX (extra ``onnx``) or OpenVINO IR (extra ``openvino``),
fp32, or int8 calibrated on real photos.

Usage (from packages/deblur_unet):
    uv run --package deblur_unet export.py --checkpoint checkpoints/best.pth --output model.onnx
    uv run --package deblur_unet export.py --checkpoint checkpoints/best.pth --format openvino \\
        --precision int8 --calibration-dir data/deblur --output model_int8.xml
    uv run --package deblur_unet inference.py --model model_int8.xml --precision int8 --input blurry.png --output sharp.png
"""

from deblur_unet.export import main

if __name__ == "__main__":
    raise SystemExit(main())
