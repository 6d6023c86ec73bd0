"""Train AlphaGAN (image + trimap -> alpha matte).

Usage (from packages/alphagan_matting):
    uv run --package alphagan_matting main.py --config configs/quick_test.yaml --synthetic
    uv run --package alphagan_matting main.py     # configs/default.yaml on dataset/dataset_labels.csv beside this file
    uv run --package alphagan_matting main.py --config configs/default.yaml --csv dataset/dataset_labels.csv \
        --resume checkpoints/last_chkp.pth
    uv run --package alphagan_matting torchrun --nproc_per_node 2 main.py --config configs/default.yaml
"""

from pathlib import Path

from alphagan_matting.main import cli

if __name__ == "__main__":
    # As in the spec, the data is dataset/dataset_labels.csv beside this file unless --csv says otherwise.
    cli(script_dir=Path(__file__).resolve().parent)
