"""Train and test transform pipelines: raw (fg, alpha, bg[, trimap]) arrays → a network-ready sample."""

from __future__ import annotations

import numpy as np
import torch

from alphagan_matting.transforms.models import matting_transforms as T
from alphagan_matting.utils import trimap_to_unit


def _to_chw(array: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())


def _finish(fg, alpha, bg, trimap, mean, std) -> dict[str, torch.Tensor]:
    comp = np.clip(T.compose(fg, alpha, bg), 0.0, 1.0).astype(np.float32)
    return {
        "image": _to_chw(T.normalize(comp, mean, std)),
        "trimap": _to_chw(trimap_to_unit(trimap)),
        "alpha": _to_chw(alpha),
        "fg": _to_chw(fg),
        "bg": _to_chw(bg),
        "composite": _to_chw(comp),
    }


class TrainTransform:
    """Scale jitter, flip, random trimap by dilation/erosion, crop around the unknown band, composite."""

    def __init__(self, crop_size: int, mean: list[float], std: list[float], scale_range=(0.75, 1.25),
                 trimap_width=(1, 15)) -> None:
        self.crop_size = crop_size
        self.mean, self.std = mean, std
        self.scale_range = scale_range
        self.trimap_width = trimap_width

    def __call__(self, fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, rng: np.random.Generator,
                 trimap: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        arrays = {"fg": fg, "alpha": alpha}
        arrays = T.random_scale(arrays, rng, *self.scale_range)
        arrays = T.ensure_min_size(arrays, self.crop_size)
        arrays = T.random_flip(arrays, rng)
        # Scale the band with the crop so a small crop is not all unknown.
        max_w = max(self.trimap_width[0], min(self.trimap_width[1], self.crop_size // 10))
        tri = T.generate_trimap(arrays["alpha"], rng, self.trimap_width[0], max_w)
        arrays["trimap"] = tri
        arrays = T.crop_around_unknown(arrays, tri, self.crop_size, rng)
        bg = T.fit_background(bg, self.crop_size, self.crop_size, rng)
        alpha = np.clip(arrays["alpha"], 0.0, 1.0)
        return _finish(arrays["fg"], alpha, bg, arrays["trimap"], self.mean, self.std)


class TestTransform:
    """Resize everything to ``resize_size`` × ``resize_size`` (trimap nearest) over a fixed background."""

    def __init__(self, resize_size: int, mean: list[float], std: list[float]) -> None:
        self.size = resize_size
        self.mean, self.std = mean, std

    def __call__(self, fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, rng: np.random.Generator | None = None,
                 trimap: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        if trimap is None:
            raise ValueError("the test transform needs the dataset's trimap")
        s = self.size
        fg, alpha = T.resize(fg, s, s), np.clip(T.resize(alpha, s, s), 0.0, 1.0)
        trimap = T.resize(trimap, s, s, nearest=True)
        bg = T.fit_background(bg, s, s, None)
        return _finish(fg, alpha, bg, trimap, self.mean, self.std)


def build_transforms(crop_size: int, resize_size: int, mean: list[float], std: list[float]):
    return TrainTransform(crop_size, mean, std), TestTransform(resize_size, mean, std)
