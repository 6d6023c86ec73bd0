"""Deblur an image or a folder at full resolution with tiled inference (CPU by default on CPU hosts).

Usage (from packages/deblur_unet):
    uv run --package deblur_unet inference.py --checkpoint checkpoints/best.pth --input blurry.png --output sharp.png
    uv run --package deblur_unet inference.py --checkpoint checkpoints/best.pth --input photos/ --output out/ \
        --tile-size 512 --overlap 64 --batch-size 4 --blend linear --device cpu
    uv run --package deblur_unet inference.py --onnx model.onnx --input photos/ --output out/
    uv run --package deblur_unet inference.py --backend openvino --model model_int8.xml --precision int8 \
        --input photos/ --output out/

Inference is one process; for training with several processes use
``torchrun --nproc_per_node 2 train.py ...``.
"""

from deblur_unet.inference import main

if __name__ == "__main__":
    raise SystemExit(main())
