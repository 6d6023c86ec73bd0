"""Predict alpha mattes at full resolution (tiled), plus a composite preview over a colour.

Usage (from packages/alphagan_matting):
    uv run --package alphagan_matting infer.py --checkpoint checkpoints/best_chkp.pth \
        --image photo.png --trimap photo_trimap.png --output alpha.png
    uv run --package alphagan_matting infer.py --checkpoint checkpoints/best_chkp.pth \
        --image images/ --trimap trimaps/ --output alphas/
Inference is single-process; torchrun is for training (uv run --package alphagan_matting torchrun --nproc_per_node 2 main.py ...).
"""

from alphagan_matting.infer import cli

if __name__ == "__main__":
    cli()
