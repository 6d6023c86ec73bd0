"""Procedural face-like images: a head, hair, eyes, brows, nose and mouth on a gradient background.

Inpainting them needs what faces need — symmetry (an eye in the hole mirrors the visible one), smooth
skin, structure at known places — without any dataset on disk.
"""

from __future__ import annotations

import numpy as np


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def synthetic_face(size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 face-like image."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = top[None, None] * (1 - yy[..., None]) + bottom[None, None] * yy[..., None]
    skin = np.array([rng.uniform(150, 240), rng.uniform(110, 190), rng.uniform(80, 160)])
    hair = rng.uniform(10, 120, 3)
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.52 + rng.uniform(-0.04, 0.04)
    rx, ry = rng.uniform(0.26, 0.32), rng.uniform(0.33, 0.4)
    img[_ellipse(yy, xx, cy - 0.06, cx, ry + 0.02, rx + 0.04)] = hair
    face = _ellipse(yy, xx, cy + 0.02, cx, ry - 0.02, rx)
    shade = 1 - 0.25 * np.clip(np.abs(xx - cx) / rx, 0, 1) ** 2
    img[face] = (skin[None] * shade[face][:, None])
    eye_dx, eye_y = rng.uniform(0.09, 0.13), cy - rng.uniform(0.02, 0.06)
    iris = rng.uniform(20, 140, 3)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        img[_ellipse(yy, xx, eye_y, ex, 0.025, 0.05)] = (245, 245, 245)
        img[_ellipse(yy, xx, eye_y, ex, 0.022, 0.022)] = iris
        img[_ellipse(yy, xx, eye_y, ex, 0.01, 0.01)] = (10, 10, 10)
        img[_ellipse(yy, xx, eye_y - 0.055, ex, 0.008, 0.055)] = hair * 0.8
    img[_ellipse(yy, xx, cy + 0.06, cx, 0.05, 0.018)] = skin * 0.8
    lips = np.array([rng.uniform(150, 220), rng.uniform(50, 110), rng.uniform(60, 120)])
    img[_ellipse(yy, xx, cy + 0.17, cx, rng.uniform(0.015, 0.03), rng.uniform(0.06, 0.1))] = lips
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
