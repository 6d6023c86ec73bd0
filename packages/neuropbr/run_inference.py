"""Preview a trained checkpoint on a dataset sample or on a folder of three PNG renders.

Usage (from this folder)::

    # dataset sample (the dataset named in the checkpoint's config)
    uv run --package neuropbr run_inference.py --checkpoint checkpoints/latest.pth --sample-idx 12 \\
        --out-dir inference_outputs/sample_12
    # custom renders: a folder with exactly three PNGs (sorted alphabetically)
    uv run --package neuropbr run_inference.py --checkpoint checkpoints/latest.pth --input-dir ./my_renders \\
        --out-dir inference_outputs/custom_material
    # native resolution through tiles of the training size
    uv run --package neuropbr run_inference.py --checkpoint checkpoints/best_model.pth --input-dir ./renders_4k --tile

Inference is a single process; ``torchrun --nproc_per_node 2`` is for training (``train.py``).
"""

from neuropbr.run_inference import main

if __name__ == "__main__":
    main()
