"""SAD, MSE, Gradient and Connectivity errors of predicted alphas, written as JSON and printed.

Usage (from packages/alphagan_matting):
    uv run --package alphagan_matting evaluate.py --pred alphas/ --gt dataset/AIM-500/mask \
        --trimap dataset/AIM-500/trimap --output metrics.json
Evaluation is single-process; torchrun is for training (uv run --package alphagan_matting torchrun --nproc_per_node 2 main.py ...).
"""

from alphagan_matting.evaluate import cli

if __name__ == "__main__":
    cli()
