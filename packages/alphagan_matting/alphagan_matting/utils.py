"""Helpers: trimap/alpha reading with validation, per-sample seeds, model/optimizer construction."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch

from alphagan_matting.models import AlphaGenerator, PatchDiscriminator
from alphagan_matting.schemas import Config, ModelCfg
from shared.errors import DataError
from shared.images import describe_conversions, read_image
from shared.pretrained import TORCHVISION_FILES, find_weights, hub_checkpoints_dir, read_state_dict

TRIMAP_VALUES = (0, 128, 255)
# The usual convention for trimaps that are not exactly 0/128/255 (JPEG artefacts, resampling):
# at most BG_MAX is background, at least FG_MIN foreground, anything between unknown.
BG_MAX, FG_MIN = 85, 170


class TrimapNotes:
    """The trimaps of a run that had to be quantised, for the one line the run prints about them."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def add(self, path: str | os.PathLike) -> None:
        self.count += 1
        self.first = self.first or str(path)

    def line(self) -> str | None:
        if not self.count:
            return None
        return (f"note: {self.count} trimap(s) held values other than 0, 128 and 255 (JPEG or resized; first: "
                f"{self.first}); read as background <= {BG_MAX}, foreground >= {FG_MIN}, unknown between")


def conversion_notes(groups: Iterable[tuple[str, Iterable[str | os.PathLike], str, bool]]) -> list[str]:
    """One line per data-changing conversion, each prefixed with the role of its files.

    ``groups``: ``(role, paths, mode, keep_16bit)`` with the mode the files are read in and whether
    they are read as float (16 bits kept). The role says which file is meant: the same kind (alpha
    dropped, say) can turn up among the images and among the alphas, with different counts.
    """
    return [line for role, paths, mode, keep_16bit in groups
            for line in describe_conversions(paths, mode, keep_16bit, role=role)]


def quantize_trimap(trimap: np.ndarray) -> np.ndarray:
    """uint8 → exactly 0 / 128 / 255 by the :data:`BG_MAX` / :data:`FG_MIN` thresholds."""
    return np.where(trimap <= BG_MAX, 0, np.where(trimap >= FG_MIN, 255, 128)).astype(np.uint8)


def validate_trimap(trimap: np.ndarray, source: str | os.PathLike, notes: TrimapNotes | None = None) -> np.ndarray:
    """``trimap`` quantised to 0 / 128 / 255 (counted in ``notes`` when that changed anything).

    Refused: a trimap with no unknown region (nothing to predict, and no pixel for the metrics). The
    callers compare its size with the image's, naming both files.
    """
    exact = np.isin(trimap, TRIMAP_VALUES).all()
    if not exact:
        trimap = quantize_trimap(trimap)
        if notes is not None:
            notes.add(source)
    if not (trimap == 128).any():
        raise DataError(f"{source}: trimap has no unknown region (no value in {BG_MAX + 1}..{FG_MIN - 1}, "
                        "128 in a clean trimap): nothing to predict")
    return trimap


def read_trimap(path: str | os.PathLike, notes: TrimapNotes | None = None) -> np.ndarray:
    """``(H, W)`` uint8 trimap with values in {0, 128, 255} (colour files are converted to luma first)."""
    return validate_trimap(read_image(path, mode="L"), path, notes)


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


def load_pretrained_encoder(generator: AlphaGenerator, path: str | os.PathLike | None,
                            use_hub: bool = True) -> str:
    """Load encoder weights, and return the one line that says where they came from.

    ``path`` (``--pretrained``: a torchvision ResNet-50 state dict or one of our checkpoints) wins;
    without it the ImageNet ResNet-50 in the torch hub cache is used when present (the paper's encoder
    starts from it), else the encoder starts from random init.
    """
    names = TORCHVISION_FILES["resnet50"]
    if path is None:
        hub = find_weights(names) if use_hub else None
        if hub is None:
            where = f" and none of {', '.join(names)} in the torch hub cache ({hub_checkpoints_dir()})" if use_hub else ""
            return f"encoder: random initialisation (no --pretrained file{where})"
        if not generator.is_resnet50:
            return (f"encoder: random initialisation (the model section narrows the generator, so the ImageNet "
                    f"ResNet-50 in {hub} does not fit)")
        usable, left_out = generator.match_encoder(read_state_dict(hub))
        if left_out:
            # A file under torchvision's name that is not its ResNet-50 would leave the encoder half random.
            raise DataError(f"{hub}: not ImageNet ResNet-50 weights ({len(left_out)} encoder tensors missing or "
                            f"wrongly shaped, e.g. {', '.join(left_out[:3])})")
        generator.load_state_dict(usable, strict=False)
        return f"encoder: ImageNet ResNet-50, {len(usable)} tensors loaded from {hub}"
    path = find_weights(names, path)
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
