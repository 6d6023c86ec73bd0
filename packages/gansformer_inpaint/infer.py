"""Inpaint images with a trained generator; PNGs out at the input's full resolution.

Usage (from packages/gansformer_inpaint):
    uv run --package gansformer_inpaint infer.py --checkpoint checkpoints/best.pth \\
        --image face.png --mask face_mask.png --output filled.png
    uv run --package gansformer_inpaint infer.py --checkpoint checkpoints/best.pth \\
        --image masked_dir/ --mask mask_dir/ --output out_dir/ --mode tile
    (single process only; torchrun is for training:
     torchrun --nproc_per_node 2 main.py ... trains, this script then runs on one device)
"""

from gansformer_inpaint.cli import infer_entry

if __name__ == "__main__":
    infer_entry()
