"""Run a converted NeuroPBR student on three renders; --reference runs the same pipeline in PyTorch.

Usage (from packages/neuropbr; needs the coreml extra: uv sync --package neuropbr --extra coreml):
    uv run --package neuropbr coreml/run_inference.py pbr_model.mlpackage --input views/ --output results/
    uv run --package neuropbr coreml/run_inference.py pbr_model.mlpackage --input views/ --output results/ \
        --reference checkpoints_student/best_student.pth    # any OS, through PyTorch
Single process only (no torchrun: this is inference, not training).
"""

from neuropbr.coreml.run_inference import main

if __name__ == "__main__":
    main()
