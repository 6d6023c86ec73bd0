"""Helpers: trimap/alpha reading with validation, per-sample seeds, model/optimizer construction."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from alphagan_matting.models import AlphaGenerator, PatchDiscriminator
from alphagan_matting.schemas import Config, ModelCfg
from shared.errors import DataError
from shared.images import read_image

TRIMAP_VALUES = (0, 128, 255)


def validate_trimap(trimap: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """Refuse a trimap holding anything but 0 / 128 / 255 (e.g. a JPEG-compressed or resized one)."""
    values = np.unique(trimap)
    bad = [int(v) for v in values if int(v) not in TRIMAP_VALUES]
    if bad:
        shown = ", ".join(str(v) for v in bad[:6]) + (", ..." if len(bad) > 6 else "")
        raise DataError(f"{source}: trimap must contain only 0, 128 and 255; found {len(bad)} other "
                        f"value(s): {shown} (save trimaps as PNG and resize them with nearest-neighbour)")
    return trimap


def read_trimap(path: str | os.PathLike) -> np.ndarray:
    """``(H, W)`` uint8 trimap with values in {0, 128, 255} (colour files are converted to luma first)."""
    return validate_trimap(read_image(path, mode="L"), path)


def read_alpha(path: str | os.PathLike) -> np.ndarray:
    """``(H, W)`` float32 alpha in 0..1 (16-bit mattes keep their precision)."""
    return read_image(path, mode="L", dtype="float32")


def trimap_to_unit(trimap: np.ndarray) -> np.ndarray:
    """uint8 0/128/255 → float32 exactly 0 / 0.5 / 1 (the values the network is trained on)."""
    out = np.zeros(trimap.shape, dtype=np.float32)
    out[trimap == 128] = 0.5
    out[trimap == 255] = 1.0
    return out


def unit_to_trimap(trimap: np.ndarray) -> np.ndarray:
    """float 0 / 0.5 / 1 → uint8 0 / 128 / 255."""
    out = np.zeros(trimap.shape, dtype=np.uint8)
    out[(trimap > 0.25) & (trimap < 0.75)] = 128
    out[trimap >= 0.75] = 255
    return out


def sample_seed(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    """The augmentation stream of one sample in one epoch: independent of workers and of resume."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index])


def build_generator(model_cfg: ModelCfg) -> AlphaGenerator:
    return AlphaGenerator(model_cfg.base_width, model_cfg.layers, model_cfg.aspp_channels)


def build_discriminator(model_cfg: ModelCfg) -> PatchDiscriminator:
    return PatchDiscriminator(in_channels=4, width=model_cfg.disc_width)


# torchvision's ImageNet ResNet-50 weights as torch.hub caches them (IMAGENET1K_V1, then IMAGENET1K_V2).
RESNET50_HUB_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")


def hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default cache folder), read at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_resnet50() -> Path | None:
    """The ImageNet ResNet-50 weights file in the torch hub cache, if one is there (never downloads)."""
    for name in RESNET50_HUB_FILES:
        path = hub_checkpoints_dir() / name
        if path.is_file():
            return path
    return None


def load_pretrained_encoder(generator: AlphaGenerator, path: str | os.PathLike | None,
                            use_hub: bool = True) -> str:
    """Load encoder weights, and return the one line that says where they came from.

    ``path`` (``--pretrained``) wins; without it the ImageNet ResNet-50 in the torch hub cache is used
    when present (the paper's encoder starts from it), else the encoder starts from random init.
    """
    if path is None:
        hub = hub_resnet50() if use_hub else None
        if hub is None:
            where = f" and no ImageNet ResNet-50 in the torch hub cache ({hub_checkpoints_dir()})" if use_hub else ""
            return f"encoder: random initialisation (no --pretrained file{where})"
        try:
            return load_pretrained_encoder(generator, hub)
        except DataError as exc:
            # A narrowed generator (model.base_width / layers) cannot take ResNet-50 weights: not an error.
            return f"encoder: random initialisation ({exc})"
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pretrained weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path}: not a readable weights file ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and "state" in state and isinstance(state["state"], dict):
        state = state["state"].get("generator", state)
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict of tensors")
    loaded = generator.load_encoder({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    if not loaded:
        raise DataError(f"{path}: no encoder weight matched this generator's layers and shapes")
    return f"encoder: {len(loaded)} tensors loaded from {path}"


def config_precision(cfg: Config) -> str:
    """The spec's ``amp`` section as a shared.amp precision name."""
    return cfg.train.amp.dtype if cfg.train.amp.use_amp else "fp32"
