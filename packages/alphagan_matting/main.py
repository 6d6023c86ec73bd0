"""Train AlphaGAN (image + trimap -> alpha matte).

Usage (from packages/alphagan_matting):
    uv run --package alphagan_matting main.py --config configs/quick_test.yaml --synthetic
    uv run --package alphagan_matting main.py --config configs/default.yaml --csv dataset/dataset_labels.csv
    uv run --package alphagan_matting main.py --config configs/default.yaml --csv dataset/dataset_labels.csv \
        --resume checkpoints/latest.pth
    torchrun --nproc_per_node 2 main.py --config configs/default.yaml --csv dataset/dataset_labels.csv
"""

from alphagan_matting.main import cli

if __name__ == "__main__":
    cli()
