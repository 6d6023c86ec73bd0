"""Ground-truth retouch masks from an (input, retouched) pair, exactly the spec's recipe.

Each step is its own function so each is tested:
HSV → |V_in - V_gt| → × magnifier → threshold → opening → dilation → Gaussian blur → half size.
All images are ``uint8`` ``(H, W, 3)`` RGB; the mask comes out ``float32`` in 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MaskRecipe:
    """Parameters of the recipe (the spec fixes ``mask_threshold=3``; the rest are ours)."""

    magnifier: float = 5.0
    mask_threshold: float = 3.0
    open_kernel: int = 3
    dilate_kernel: int = 5
    dilate_iterations: int = 1
    blur_kernel: int = 7


def value_channel(image: np.ndarray) -> np.ndarray:
    """The V (brightness = max of R, G, B) channel of an RGB ``uint8`` image, through OpenCV's HSV."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 2]


def value_difference(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``|V(image) - V(target)|`` as ``uint8``."""
    return cv2.absdiff(value_channel(image), value_channel(target))


def amplify(diff: np.ndarray, magnifier: float) -> np.ndarray:
    """Scale the difference so faint retouches clear the threshold, saturating at 255."""
    return np.clip(diff.astype(np.float32) * magnifier, 0, 255).astype(np.uint8)


def threshold(diff: np.ndarray, mask_threshold: float) -> np.ndarray:
    """Binary ``uint8`` mask (0 / 255) of pixels whose amplified difference exceeds the threshold."""
    return np.where(diff > mask_threshold, 255, 0).astype(np.uint8)


def open_then_dilate(mask: np.ndarray, open_kernel: int = 3, dilate_kernel: int = 5, iterations: int = 1) -> np.ndarray:
    """Morphological opening (drops isolated noise pixels), then dilation (covers retouch borders)."""
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((open_kernel, open_kernel), np.uint8))
    return cv2.dilate(opened, np.ones((dilate_kernel, dilate_kernel), np.uint8), iterations=iterations)


def soften(mask: np.ndarray, blur_kernel: int = 7) -> np.ndarray:
    """Gaussian blur for soft edges; returns ``float32`` in 0..1."""
    blurred = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (blur_kernel, blur_kernel), 0)
    return np.clip(blurred, 0.0, 1.0)


def half_resolution(mask: np.ndarray) -> np.ndarray:
    """Area-resize to ``(H // 2, W // 2)``, the resolution the mask head predicts at."""
    height, width = mask.shape[:2]
    return cv2.resize(mask, (max(width // 2, 1), max(height // 2, 1)), interpolation=cv2.INTER_AREA)


def full_resolution_mask(image: np.ndarray, target: np.ndarray, recipe: MaskRecipe = MaskRecipe()) -> np.ndarray:
    """The soft mask at the input's resolution (every step but the final resize)."""
    if image.shape != target.shape:
        raise ValueError(f"input {image.shape} and target {target.shape} differ in size")
    diff = amplify(value_difference(image, target), recipe.magnifier)
    binary = threshold(diff, recipe.mask_threshold)
    binary = open_then_dilate(binary, recipe.open_kernel, recipe.dilate_kernel, recipe.dilate_iterations)
    return soften(binary, recipe.blur_kernel)


def generate_gt_mask(image: np.ndarray, target: np.ndarray, recipe: MaskRecipe = MaskRecipe()) -> np.ndarray:
    """The full recipe: ``(H // 2, W // 2)`` ``float32`` soft mask in 0..1."""
    return half_resolution(full_resolution_mask(image, target, recipe))
