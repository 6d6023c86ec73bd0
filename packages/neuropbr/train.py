"""Train the NeuroPBR multi-view fusion teacher.

Usage (from this folder)::

    # single process (CUDA → MPS → CPU)
    uv run --package neuropbr train.py --input-dir ./data/input --output-dir ./data/output
    # CPU smoke test, no dataset needed
    uv run --package neuropbr train.py --config quick_test --synthetic --batch-size 2 --image-size 64 --epochs 2
    # resume
    uv run --package neuropbr train.py --resume checkpoints/checkpoint_epoch_0050.pth
    # two GPUs (DDP)
    uv run --package neuropbr torchrun --nproc_per_node 2 train.py --input-dir ./data/input --output-dir ./data/output

Every flag: ``uv run --package neuropbr train.py --help`` or the README.
"""

from neuropbr.train import (  # re-exported: ``from train import MultiViewPBRGenerator``
    MultiViewPBRGenerator,
    main,
)

__all__ = ["MultiViewPBRGenerator", "main"]

if __name__ == "__main__":
    main()
