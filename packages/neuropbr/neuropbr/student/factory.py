"""Build a student from its config, and load one back from any student checkpoint."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from neuropbr.student.config import StudentConfig, config_from_dict
from neuropbr.student.convattn import MobileNetV3ConvAttnStudent
from neuropbr.student.mobilenet_vit import MobileNetV3ViTStudent
from shared.checkpoint import CheckpointError, load_checkpoint

STUDENT_KIND = "neuropbr_student"
ARCHES: dict[str, type[nn.Module]] = {
    "mobilenetv3_vit": MobileNetV3ViTStudent,
    "mobilenetv3_convattn": MobileNetV3ConvAttnStudent,
}


def build_student(cfg: StudentConfig) -> nn.Module:
    cfg.validate()
    return ARCHES[cfg.model.arch](cfg.model)


def detect_arch(state_dict: dict[str, Any]) -> str:
    """The architecture a state dict belongs to, from its keys (for checkpoints without a config)."""
    if any(k.startswith("fusion.plk.") for k in state_dict):
        return "mobilenetv3_convattn"
    if any(k.startswith("fusion.blocks.0.qkv") for k in state_dict):
        return "mobilenetv3_vit"
    raise CheckpointError("state dict is neither student architecture (no fusion.plk.* nor fusion.blocks.*.qkv keys)")


def _split(ckpt: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model state dict, config dict) from a training checkpoint or an exported ``best_student.pth``."""
    if "state" in ckpt and isinstance(ckpt["state"], dict) and "model" in ckpt["state"]:
        if ckpt.get("kind") not in (None, STUDENT_KIND):
            raise CheckpointError(f"{source}: checkpoint was written by '{ckpt.get('kind')}', not a NeuroPBR student "
                                  "(the teacher's checkpoints go to teacher_infer.py, not the converter)")
        return ckpt["state"]["model"], ckpt.get("config", {})
    if "model_state_dict" in ckpt:
        return ckpt["model_state_dict"], ckpt.get("config", {})
    raise CheckpointError(f"{source}: no student weights (expected 'state.model' or 'model_state_dict')")


def load_student(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                 ) -> tuple[nn.Module, StudentConfig]:
    """Rebuild the student stored in ``path``, detecting its architecture; returns (eval model, config)."""
    ckpt = load_checkpoint(path, map_location)
    state, config = _split(ckpt, str(path))
    cfg = config_from_dict(config) if config else StudentConfig()
    arch = detect_arch(state)
    if cfg.model.arch != arch:
        cfg.model.arch = arch
    cfg.model.pretrained = "none"  # weights come from the checkpoint; never look for ImageNet files
    model = build_student(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: student weights do not fit the stored config: {first[:300]}") from None
    return model.eval(), cfg
