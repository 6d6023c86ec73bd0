"""Distillation loss: a weighted mix of matching the teacher and matching the ground truth.

    loss = w_teacher · term(student, teacher) + w_gt · term(student, ground truth)
    term(p, r) = w_albedo·L1(p.albedo, r.albedo) + w_roughness·L1(p.roughness, r.roughness)
               + w_metallic·L1(p.metallic, r.metallic) + w_normal_map·L1(p.normal, r.normal)
               + w_normal_angle·mean(1 − cos∠(p.normal, r.normal))

L1 is the mean absolute error over all pixels and channels; normals are unit vectors in [-1, 1].
The teacher term transfers what the teacher learned (including its smooth behaviour on ambiguous
renders); the ground-truth term keeps the student from copying the teacher's errors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuropbr.student.config import DistillLossConfig

Maps = dict[str, torch.Tensor]


def normal_angle_loss(pred: torch.Tensor, ref: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """mean(1 − cos) between normal fields ``(B, 3, H, W)``; 0 when aligned, 2 when opposite."""
    cos = (pred * ref).sum(dim=1) / (pred.norm(dim=1) * ref.norm(dim=1)).clamp_min(eps)
    return (1.0 - cos).mean()


class DistillationLoss(nn.Module):
    def __init__(self, cfg: DistillLossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DistillLossConfig()

    def term(self, pred: Maps, ref: Maps) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        parts = {
            "albedo_l1": F.l1_loss(pred["albedo"], ref["albedo"]),
            "roughness_l1": F.l1_loss(pred["roughness"], ref["roughness"]),
            "metallic_l1": F.l1_loss(pred["metallic"], ref["metallic"]),
            "normal_l1": F.l1_loss(pred["normal"], ref["normal"]),
            "normal_angle": normal_angle_loss(pred["normal"], ref["normal"]),
        }
        total = (c.w_albedo * parts["albedo_l1"] + c.w_roughness * parts["roughness_l1"]
                 + c.w_metallic * parts["metallic_l1"] + c.w_normal_map * parts["normal_l1"]
                 + c.w_normal_angle * parts["normal_angle"])
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def forward(self, pred: Maps, teacher: Maps | None, target: Maps | None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and a flat dict of logged parts (``teacher/…``, ``gt/…``).

        A missing ``teacher`` (no shards) or ``target`` drops that term; its weight is not moved to the other.
        """
        if teacher is None and target is None:
            raise ValueError("DistillationLoss needs teacher predictions, ground truth, or both")
        total = next(iter(pred.values())).new_zeros(())
        logs: dict[str, float] = {}
        for name, ref, weight in (("teacher", teacher, self.cfg.w_teacher), ("gt", target, self.cfg.w_gt)):
            if ref is None or weight == 0:
                continue
            value, parts = self.term(pred, ref)
            total = total + weight * value
            logs[f"{name}/loss"] = float(value.detach())
            logs.update({f"{name}/{k}": v for k, v in parts.items()})
        logs["loss"] = float(total.detach())
        return total, logs
