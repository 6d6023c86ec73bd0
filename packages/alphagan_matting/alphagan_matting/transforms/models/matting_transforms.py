"""Matting augmentations on numpy arrays (HWC float32 images, HW float32 alpha, uint8 trimaps).

Each takes an explicit ``np.random.Generator`` so a sample's augmentation depends only on its seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage


def resize(array: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """Resize an HW or HWC float32/uint8 array with PIL (bilinear, or nearest for trimaps)."""
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((width, height), resample))
    if array.ndim == 2:
        return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), resample))
    channels = [resize(array[..., c], height, width, nearest) for c in range(array.shape[2])]
    return np.stack(channels, axis=-1)


def ensure_min_size(arrays: dict[str, np.ndarray], size: int, nearest: frozenset[str] = frozenset()) -> dict:
    """Upscale every array so the short side is at least ``size`` (smaller images are enlarged, not refused)."""
    height, width = next(iter(arrays.values())).shape[:2]
    short = min(height, width)
    if short >= size:
        return arrays
    scale = size / short
    h, w = max(size, round(height * scale)), max(size, round(width * scale))
    return {k: resize(v, h, w, nearest=k in nearest) for k, v in arrays.items()}


def random_scale(arrays: dict[str, np.ndarray], rng: np.random.Generator, low: float = 0.75, high: float = 1.25,
                 nearest: frozenset[str] = frozenset()) -> dict:
    """Scale jitter: resize everything by one random factor."""
    factor = float(rng.uniform(low, high))
    height, width = next(iter(arrays.values())).shape[:2]
    h, w = max(1, round(height * factor)), max(1, round(width * factor))
    return {k: resize(v, h, w, nearest=k in nearest) for k, v in arrays.items()}


def random_flip(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
    """Horizontal flip with probability 1/2 (vertical flips would put the sky below)."""
    if rng.random() < 0.5:
        return {k: np.ascontiguousarray(v[:, ::-1]) for k, v in arrays.items()}
    return arrays


def generate_trimap(alpha: np.ndarray, rng: np.random.Generator, min_width: int = 1, max_width: int = 15) -> np.ndarray:
    """A trimap from a GT alpha: the transition band, widened by random dilation/erosion, is unknown.

    Foreground is where alpha is 1 after eroding by ``k`` px; background where alpha is 0 after
    dilating the non-zero part by ``k`` px; the rest is unknown (128). ``k`` is drawn per sample so the
    network sees narrow and wide unknown bands.
    """
    fg = alpha >= 1.0 - 1e-3
    nonzero = alpha > 1e-3
    k_fg, k_bg = (int(rng.integers(min_width, max_width + 1)) for _ in range(2))
    fg_eroded = ndimage.binary_erosion(fg, iterations=k_fg, border_value=1) if fg.any() else fg
    nonzero_dilated = ndimage.binary_dilation(nonzero, iterations=k_bg) if nonzero.any() else nonzero
    trimap = np.full(alpha.shape, 128, dtype=np.uint8)
    trimap[fg_eroded] = 255
    trimap[~nonzero_dilated] = 0
    return trimap


def crop_around_unknown(arrays: dict[str, np.ndarray], trimap: np.ndarray, size: int,
                        rng: np.random.Generator) -> dict:
    """A ``size`` × ``size`` crop centred (as far as the border allows) on a random unknown pixel."""
    height, width = trimap.shape
    ys, xs = np.nonzero(trimap == 128)
    if len(ys):
        pick = int(rng.integers(len(ys)))
        cy, cx = int(ys[pick]), int(xs[pick])
    else:
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top = int(np.clip(cy - size // 2, 0, height - size))
    left = int(np.clip(cx - size // 2, 0, width - size))
    return {k: v[top : top + size, left : left + size] for k, v in arrays.items()}


def random_crop(array: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``height`` × ``width`` window (the array must be at least that large)."""
    top = int(rng.integers(array.shape[0] - height + 1))
    left = int(rng.integers(array.shape[1] - width + 1))
    return array[top : top + height, left : left + width]


def fit_background(bg: np.ndarray, height: int, width: int, rng: np.random.Generator | None) -> np.ndarray:
    """Cover ``height`` × ``width`` with the background: scale to cover, then crop (random or centre)."""
    scale = max(height / bg.shape[0], width / bg.shape[1])
    if scale > 1 or rng is None:
        bg = resize(bg, max(height, round(bg.shape[0] * scale)), max(width, round(bg.shape[1] * scale)))
    if rng is None:
        top, left = (bg.shape[0] - height) // 2, (bg.shape[1] - width) // 2
        return bg[top : top + height, left : left + width]
    return random_crop(bg, height, width, rng)


def compose(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """``α·F + (1 - α)·B`` for HWC images and an HW alpha."""
    a = alpha[..., None]
    return a * fg + (1.0 - a) * bg


def normalize(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    return (image - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
