"""Hole masks: derived from a masked/clean pair, and random free-form + box masks for synthetic data."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else mask


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return 1 - _dilate(1 - mask, radius)


def derive_mask(masked: np.ndarray, clean: np.ndarray, threshold: int = 24, close_radius: int = 2,
                open_radius: int = 1, grow: int = 0) -> np.ndarray:
    """Hole mask (H, W) float32 in {0, 1} from where ``masked`` and ``clean`` (H, W, 3 uint8) differ.

    Cleanup, because a raw difference is noisy: JPEG ringing leaves isolated specks outside the hole and
    hole colours that happen to match the face (a white fill over a white collar) leave pin-holes inside
    it. Opening removes the specks, closing fills the pin-holes, and a final 1-pixel growth covers the
    anti-aliased rim so that no half-filled edge pixel counts as known.
    """
    diff = np.abs(masked.astype(np.int16) - clean.astype(np.int16)).max(axis=2) > threshold
    mask = torch.from_numpy(diff.astype(np.float32))[None, None]
    mask = _dilate(_erode(mask, open_radius), open_radius)  # opening
    mask = _erode(_dilate(mask, close_radius), close_radius)  # closing
    mask = _dilate(mask, grow)
    return mask[0, 0].numpy()


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (1, H, W) {0,1} mask conservatively: a target pixel touching any hole pixel is a hole."""
    if mask.shape[-2:] == (size, size):
        return mask
    area = F.interpolate(mask[None], size=(size, size), mode="area")[0]
    return (area > 1e-3).float()


def random_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) float32 mask of 1-4 random brush strokes and 0-2 boxes covering ~10-50 %."""
    mask = np.zeros((size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(1, 5))):
        x, y = rng.uniform(0, size, 2)
        width = rng.uniform(0.04, 0.12) * size
        for _ in range(int(rng.integers(3, 8))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.08, 0.25) * size
            nx, ny = np.clip(x + length * np.cos(angle), 0, size - 1), np.clip(y + length * np.sin(angle), 0, size - 1)
            for t in np.linspace(0, 1, 12):
                cx, cy = x + (nx - x) * t, y + (ny - y) * t
                mask[(xx - cx) ** 2 + (yy - cy) ** 2 <= (width / 2) ** 2] = 1
            x, y = nx, ny
    for _ in range(int(rng.integers(0, 3))):
        h, w = (rng.uniform(0.15, 0.4, 2) * size).astype(int)
        top, left = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
        mask[top : top + h, left : left + w] = 1
    if mask.mean() > 0.6:  # too little context left to inpaint from: keep only the strokes' first half
        mask[:, size // 2 :] = 0
    if mask.sum() == 0:
        mask[size // 4 : size // 2, size // 4 : size // 2] = 1
    return mask
