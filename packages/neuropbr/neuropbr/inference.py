"""Load a trained generator from any checkpoint form and run it with the training preprocessing.

The one teacher loader: ``run_inference.py``, ``evaluate.py`` and the student pipeline's
``teacher_infer.py`` all load through :func:`load_generator`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from neuropbr.data import input_size
from neuropbr.maps import resize_maps
from neuropbr.models.generator import MultiViewPBRGenerator
from neuropbr.train_config import TrainConfig
from shared.checkpoint import CheckpointError, load_checkpoint
from shared.tiling import tiled_forward

STUDENT_KIND = "neuropbr_student"


def generator_state(ckpt: Mapping[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The generator weights of a training checkpoint or of an exported ``{'config', 'model_state_dict'}``."""
    if ckpt.get("kind") == STUDENT_KIND:
        raise CheckpointError(f"{source}: this is a student checkpoint; the teacher's is needed here "
                              "(best_model.pth or latest.pth of train.py)")
    for key in ("generator_state_dict", "model_state_dict"):
        if key in ckpt:
            return ckpt[key]
    nested = ckpt.get("state", {})
    if isinstance(nested, Mapping) and "generator" in nested:
        return nested["generator"]
    raise CheckpointError(f"{source}: no generator weights (expected 'generator_state_dict', 'model_state_dict' "
                          "or a neuropbr training checkpoint)")


def load_generator(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> tuple[MultiViewPBRGenerator, TrainConfig]:
    """Rebuild the generator from the config stored in ``checkpoint`` and load its weights (eval mode)."""
    ckpt = load_checkpoint(checkpoint)
    state = generator_state(ckpt, str(checkpoint))
    if not ckpt.get("config"):
        raise CheckpointError(f"{checkpoint}: checkpoint holds no 'config'; it was not written by neuropbr")
    cfg = TrainConfig.from_dict(ckpt["config"])
    cfg.model.pretrained_path = None  # the weights come from the checkpoint; no encoder file needed
    model = MultiViewPBRGenerator(cfg, quiet=True)
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{checkpoint}: generator weights do not fit its config: {first[:200]}") from None
    return model.to(device).eval(), cfg


def normalize_views(views: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Views ``(…, 3, 3, H, W)`` in [0, 1] → normalised with the config's ``transform.mean/std``."""
    mean = torch.tensor(cfg.transform.mean, dtype=views.dtype, device=views.device).view(3, 1, 1)
    std = torch.tensor(cfg.transform.std, dtype=views.dtype, device=views.device).view(3, 1, 1)
    return (views - mean) / std


def resize_views(views: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``(V, 3, H, W)`` (or batched ``(B, V, 3, H, W)``) views like the training data loader."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(views.shape[-2:]) == size:
        return views
    lead = views.shape[:-3]
    flat = views.reshape(-1, *views.shape[-3:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return out.reshape(*lead, 3, *size)


@torch.no_grad()
def predict(model: MultiViewPBRGenerator, views: torch.Tensor, cfg: TrainConfig, mode: str = "resize",
            tile_overlap: int | None = None, precision: str = "fp32", batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Maps ``(B, C, H, W)`` at the views' full resolution from raw views ``(B, 3, 3, H, W)`` in [0, 1].

    ``mode="resize"`` mirrors training: views resized to the config's input size, predicted, and the
    maps resized back to ``H × W``. ``mode="tile"`` keeps the native resolution and runs the model over
    overlapping tiles of the training size (``shared.tiling.tiled_forward``), for inputs larger than
    what the model was trained on or that do not fit in memory at once.
    """
    device = next(model.parameters()).device
    b, v, c, h, w = views.shape
    size = input_size(cfg)
    if mode == "tile":
        if getattr(model, "photometric", False):
            # Each tile is shaded as if it were the whole lit plane: the lights sit elsewhere relative to it.
            print("note: tiled inference with model.photometric_input: the photometric-stereo normal of each tile "
                  "assumes the tile covers the whole rendered plane; resize mode (the default) keeps it exact",
                  file=sys.stderr)
        x = normalize_views(views, cfg).reshape(b, v * c, h, w)
        overlap = tile_overlap if tile_overlap is not None else size // 8
        out = tiled_forward(model, x, tile_size=size, overlap=overlap, batch_size=batch_size, device=device,
                            precision=precision)
        return resize_maps(out, (h, w))  # renormalises the blended normals
    x = normalize_views(resize_views(views, size), cfg).to(device)
    from shared.amp import autocast

    with autocast(device, precision):
        out = model(x)
    out = {k: t.float().cpu() for k, t in out.items()}
    return resize_maps(out, (h, w), mode="bicubic")
