"""Unpack the dataset archives and write dataset/dataset_labels.csv.

Usage (from packages/alphagan_matting):
    uv run --package alphagan_matting prepare_data.py unpack dataset/AIM-500.zip dataset/archive.zip --dst dataset
    uv run --package alphagan_matting prepare_data.py labels --fg dataset/AIM-500 --bg dataset/BG20K \
        --output dataset/dataset_labels.csv
Data preparation is single-process; torchrun is for training (uv run --package alphagan_matting torchrun --nproc_per_node 2 main.py ...).
"""

from alphagan_matting.prepare import cli

if __name__ == "__main__":
    cli()
