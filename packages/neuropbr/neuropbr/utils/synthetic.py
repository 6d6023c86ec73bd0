"""Procedural PBR materials and the ``--synthetic`` dataset.

Each material is drawn from a ``torch.Generator`` seeded by ``(seed, index)``: the same seed, index and
size always give the same maps and views, in any process or DataLoader worker (the student pipeline
relies on this to match teacher shards to samples). Patterns live in continuous plane coordinates, so
one material at two sizes looks alike, but values are only identical for the same size.

Materials: a pattern (noise, wood stripes, tiles/bricks, cells/cobbles) drives a two-colour albedo, a
height field whose gradients give the normal map (OpenGL, +Y up), a roughness field, and a metallic
map that is all dielectric, all metal, or metal inlays on the pattern.
"""

from __future__ import annotations

import colorsys
import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuropbr.maps import maps_to_tensor
from neuropbr.utils.render import DEFAULT_SETUPS, dirty_views, render_views

PATTERNS = ("noise", "wood", "tiles", "cells")
METAL_TINTS = ((0.95, 0.64, 0.54), (1.0, 0.78, 0.34), (0.91, 0.92, 0.92), (0.56, 0.57, 0.58), (0.95, 0.93, 0.88))


def _material_generator(seed: int, index: int, salt: int = 0) -> torch.Generator:
    g = torch.Generator()
    # Mixed so that neighbouring (seed, index) pairs give unrelated streams.
    g.manual_seed((seed * 1_000_003 + index * 7919 + salt * 104_729 + 12345) % (2**63 - 1))
    return g


def _rand(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


def fbm(size: int, g: torch.Generator, base_cells: int = 4, octaves: int = 4, persistence: float = 0.5) -> torch.Tensor:
    """Fractal value noise ``(size, size)`` in [0, 1]: upsampled random grids, finer ones fainter."""
    total = torch.zeros(size, size)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * 2**o
        grid = torch.rand(1, 1, cells + 1, cells + 1, generator=g)
        up = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0, 0]
        total += amp * up
        norm += amp
        amp *= persistence
    total = total / norm
    return (total - total.min()) / (total.max() - total.min() + 1e-8)


def _coords(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(t, t, indexing="ij")
    return x, y


def _pattern(kind: str, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask in [0, 1] choosing between the two colours, height in [0, 1])."""
    x, y = _coords(size)
    warp = fbm(size, g, base_cells=3, octaves=3)
    if kind == "noise":
        n = fbm(size, g, base_cells=int(_rand(g, 2, 6)), octaves=5)
        return (n > _rand(g, 0.35, 0.65)).float() * 0.6 + 0.4 * n, n
    if kind == "wood":
        freq = _rand(g, 6, 16)
        angle = _rand(g, 0, math.pi)
        u = x * math.cos(angle) + y * math.sin(angle)
        rings = 0.5 + 0.5 * torch.sin(2 * math.pi * (freq * u + 1.5 * warp))
        return rings, 0.7 * rings + 0.3 * warp
    if kind == "tiles":
        rows = int(_rand(g, 3, 8))
        cols = int(_rand(g, 2, 6))
        v = y * rows
        u = x * cols + 0.5 * (torch.floor(v) % 2)  # running bond
        mortar_w = _rand(g, 0.04, 0.12)
        dist = torch.minimum(torch.minimum(u - torch.floor(u), torch.ceil(u) - u),
                             torch.minimum(v - torch.floor(v), torch.ceil(v) - v) * cols / rows)
        tile = torch.sigmoid((dist - mortar_w) * size / 3.0)
        return tile, 0.8 * tile + 0.2 * warp * tile
    # cells: distance to the nearest of a few random points (cobbles).
    count = int(_rand(g, 6, 24))
    pts = torch.rand(count, 2, generator=g)
    offsets = torch.tensor([(ox, oy) for ox in (-1.0, 0.0, 1.0) for oy in (-1.0, 0.0, 1.0)])  # tileable
    centres = (pts[:, None, :] + offsets[None]).reshape(-1, 2)
    grid = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
    d = torch.cdist(grid, centres).min(dim=1).values.reshape(size, size)
    d = d / (d.max() + 1e-8)
    bump = (1.0 - d).clamp(0, 1) ** 2
    return (bump > 0.35).float() * 0.7 + 0.3 * bump, bump


def _colour(g: torch.Generator, saturation: tuple[float, float] = (0.1, 0.7)) -> torch.Tensor:
    h, s, v = _rand(g), _rand(g, *saturation), _rand(g, 0.2, 0.9)
    return torch.tensor(colorsys.hsv_to_rgb(h, s, v), dtype=torch.float32)


def height_to_normal(height: torch.Tensor, strength: float) -> torch.Tensor:
    """Height ``(H, W)`` (plane units) → unit tangent-space normals ``(3, H, W)`` (OpenGL, +Y up)."""
    size_x, size_y = height.shape[1], height.shape[0]
    padded = F.pad(height[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    # Plane spans 2 units over the image: one pixel is 2/size units.
    dh_dx = (padded[1:-1, 2:] - padded[1:-1, :-2]) / (2 * 2.0 / size_x)
    dh_drow = (padded[2:, 1:-1] - padded[:-2, 1:-1]) / (2 * 2.0 / size_y)
    n = torch.stack([-strength * dh_dx, strength * dh_drow, torch.ones_like(height)])  # +y is up = -row
    return F.normalize(n, dim=0)


def make_material(index: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Procedural material ``index`` at ``size × size``: maps as in :mod:`neuropbr.maps` (no batch dim)."""
    g = _material_generator(seed, index)
    kind = PATTERNS[int(torch.randint(len(PATTERNS), (1,), generator=g))]
    mask, height = _pattern(kind, size, g)
    detail = fbm(size, g, base_cells=8, octaves=3)
    c1, c2 = _colour(g), _colour(g)
    variation = 0.85 + 0.3 * detail
    albedo = (c1[:, None, None] * mask + c2[:, None, None] * (1 - mask)) * variation
    metal_kind = _rand(g)
    if metal_kind < 0.5:
        metallic = torch.zeros(size, size)
    elif metal_kind < 0.75:
        metallic = torch.ones(size, size)
    else:
        metallic = (mask > 0.5).float()
    tint = torch.tensor(METAL_TINTS[int(torch.randint(len(METAL_TINTS), (1,), generator=g))])
    albedo = albedo * (1 - metallic) + (tint[:, None, None] * (0.9 + 0.1 * detail)) * metallic
    r_base, r_contrast = _rand(g, 0.15, 0.85), _rand(g, -0.35, 0.35)
    roughness = (r_base + r_contrast * (mask - 0.5) + 0.15 * (detail - 0.5)).clamp(0.05, 1.0)
    amplitude = _rand(g, 0.03, 0.12)
    normal = height_to_normal(amplitude * (height + 0.3 * detail), strength=1.0)
    return {
        "albedo": albedo.clamp(0, 1),
        "roughness": roughness[None],
        "metallic": metallic[None],
        "normal": normal,
    }


def make_sample(index: int, size: int, seed: int = 0, dirty: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(views (3, 3, H, W) in [0, 1], maps)`` for material ``index``; ``dirty`` adds capture artefacts."""
    maps = make_material(index, size, seed)
    views = render_views(maps, DEFAULT_SETUPS)
    if dirty:
        views = dirty_views(views, _material_generator(seed, index, salt=1))
    return views, maps


class SyntheticPBRDataset(Dataset):
    """``--synthetic`` data with :class:`~neuropbr.utils.dataset.PBRDataset`'s interface.

    Items are ``(inputs, targets)``: inputs ``(3, 3, H, W)`` normalised with ``transform_mean/std``;
    targets ``(8, H, W)`` = albedo, roughness, metallic, normal (:func:`neuropbr.maps.maps_to_tensor`).
    ``curriculum_mode`` as for real data: 0 clean, 2 dirty, 1 both (every material queued once per source).
    ``output_size`` (default ``image_size``) resizes the targets only (the student's SR setting).

    Every item is a pure function of ``(seed, index, image_size)``.
    """

    def __init__(self, num_samples: int = 16, image_size: int = 64, seed: int = 0,
                 transform_mean=(0.5, 0.5, 0.5), transform_std=(0.5, 0.5, 0.5), curriculum_mode: int = 0,
                 output_size: int | None = None, cache: bool = True) -> None:
        if num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        self.num_samples = num_samples
        self.image_size = int(image_size)
        self.output_size = int(output_size) if output_size else self.image_size
        self.seed = seed
        self.mean = torch.tensor(transform_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(transform_std, dtype=torch.float32).view(1, 3, 1, 1)
        sources = {0: ("clean",), 1: ("clean", "dirty"), 2: ("dirty",)}[int(curriculum_mode)]
        self.entries: list[tuple[str, int]] = [(src, i) for src in sources for i in range(num_samples)]
        # Small sizes are cached: the same items come back every epoch and generating them costs more
        # than a training step of a tiny model. Large sizes are regenerated (memory).
        self._cache: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] | None = (
            {} if cache and self.image_size <= 256 else None
        )

    def __len__(self) -> int:
        return len(self.entries)

    def sample_key(self, idx: int) -> str:
        """Stable name of item ``idx``: ``<source>/sample_XXXX``."""
        source, i = self.entries[idx]
        return f"{source}/sample_{i:04d}"

    @property
    def group_keys(self) -> list[str]:
        """Material of each item (train/val splits keep a material's clean and dirty renders together)."""
        return [f"material_{i:04d}" for _, i in self.entries]

    def load_raw(self, idx: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Unnormalised views ``(3, 3, H, W)`` in [0, 1] and the target maps (at ``output_size``)."""
        if self._cache is not None and idx in self._cache:
            return self._cache[idx]
        source, i = self.entries[idx]
        views, maps = make_sample(i, self.image_size, self.seed, dirty=source == "dirty")
        if self.output_size != self.image_size:
            from neuropbr.maps import resize_maps

            maps = {k: v[0] for k, v in resize_maps({k: v[None] for k, v in maps.items()},
                                                     (self.output_size, self.output_size)).items()}
        if self._cache is not None:
            self._cache[idx] = (views, maps)
        return views, maps

    def normalize(self, views: torch.Tensor) -> torch.Tensor:
        return (views - self.mean) / self.std

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, maps = self.load_raw(idx)
        return self.normalize(views), maps_to_tensor(maps)
