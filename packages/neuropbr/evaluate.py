"""Evaluate PBR maps: per-map PSNR / SSIM / MAE and normal-angle statistics (JSON + table).

Usage (from this folder)::

    # a trained teacher on its validation split
    uv run --package neuropbr evaluate.py --checkpoint checkpoints/best_model.pth --out metrics.json
    # folders of predicted vs ground-truth material folders (paired by name)
    uv run --package neuropbr evaluate.py --pred-dir preds/ --gt-dir data/output/ --out metrics.json

Evaluation is a single process; ``torchrun --nproc_per_node 2`` is for training (``train.py``).
"""

from neuropbr.evaluate import main

if __name__ == "__main__":
    main()
