"""The deployable graph: three 0..1 RGB views in, ImageNet normalisation inside, four maps out.

Shared by the Core ML converter, the ONNX export and ``run_inference.py --reference`` so that all three
run exactly the same pre-processing.
"""

from __future__ import annotations

import torch
from torch import nn

from neuropbr.student.config import StudentConfig

INPUT_NAMES = ("view_0", "view_1", "view_2")
OUTPUT_NAMES = ("albedo", "roughness", "metallic", "normal")


class DeployWrapper(nn.Module):
    """``forward(view_0, view_1, view_2)`` with each view ``(1, 3, H, W)`` in [0, 1] → (albedo, roughness,
    metallic, normal); albedo/roughness/metallic in [0, 1], normal unit vectors in [-1, 1]."""

    def __init__(self, student: nn.Module, cfg: StudentConfig, use_sr: bool = True) -> None:
        super().__init__()
        self.student = student.eval()
        # Pre-compute large kernels now, so a tracer records them as module constants, not as merge ops.
        with torch.no_grad():
            for module in self.student.modules():
                if hasattr(module, "precomputed") and hasattr(module, "kernel"):
                    module.kernel()
        self.use_sr = use_sr
        self.register_buffer("mean", torch.tensor(cfg.data.mean, dtype=torch.float32).view(1, 1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.data.std, dtype=torch.float32).view(1, 1, 3, 1, 1))

    def forward(self, view_0: torch.Tensor, view_1: torch.Tensor, view_2: torch.Tensor):
        views = torch.stack([view_0, view_1, view_2], dim=1)
        views = (views - self.mean) / self.std  # ImageNet normalisation baked into the graph
        out = self.student(views, use_sr=self.use_sr)
        return tuple(out[name] for name in OUTPUT_NAMES)
