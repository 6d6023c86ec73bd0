"""Convert a trained NeuroPBR student checkpoint to a Core ML .mlpackage (iOS 17+).

Usage (from packages/neuropbr; needs the coreml extra: uv sync --package neuropbr --extra coreml):
    uv run --package neuropbr coreml/converter.py checkpoints_student/best_student.pth \
        --output pbr_model.mlpackage [--no-fp16] [--palettization]
    uv run --package neuropbr coreml/converter.py checkpoints_student/best_student.pth \
        --test-resolution 384 --use-sr --output pbr_384_sr.mlpackage
Single process only (no torchrun: this is conversion, not training).
"""

from neuropbr.coreml.converter import main

if __name__ == "__main__":
    main()
