"""Write a dataset in the spec's layout: render three views of each material's maps.

Sources: folders of real maps (``<material>/{albedo,roughness,metallic,normal}.png``) or procedural
materials. Output::

    <root>/input/clean/sample_XXXX/{0,1,2}.png
    <root>/input/dirty/sample_XXXX/{0,1,2}.png      (with dirty=True)
    <root>/input/render_metadata.json
    <root>/output/<material>/{albedo,roughness,metallic,normal}.png
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from neuropbr.maps import maps_for_display
from neuropbr.utils.dataset import MAP_FILES, VIEW_FILES, load_material
from neuropbr.utils.render import DEFAULT_SETUPS, dirty_views, render_views
from neuropbr.utils.synthetic import make_material
from shared.errors import DataError
from shared.images import save_image


def _write_sample(root: Path, index: int, material: str, maps: dict[str, torch.Tensor], dirty: bool,
                  seed: int) -> str:
    name = f"sample_{index:04d}"
    views = render_views(maps, DEFAULT_SETUPS)
    for view, fname in zip(views, VIEW_FILES, strict=True):
        save_image(root / "input" / "clean" / name / fname, view)
    if dirty:
        gen = torch.Generator().manual_seed(seed * 7919 + index)
        for view, fname in zip(dirty_views(views, gen), VIEW_FILES, strict=True):
            save_image(root / "input" / "dirty" / name / fname, view)
    shown = maps_for_display(maps)
    mat_dir = root / "output" / material
    if not (mat_dir / MAP_FILES["normal"]).is_file():
        for key, fname in MAP_FILES.items():
            save_image(mat_dir / fname, shown[key])
    return name


def write_dataset_from_materials(material_dirs: Sequence[Path], root: str | Path, size: int | None = None,
                                 dirty: bool = True, seed: int = 0) -> dict[str, str]:
    """One sample per material folder; returns the metadata written."""
    root = Path(root)
    if not material_dirs:
        raise DataError("no material folders given")
    metadata = {}
    for i, folder in enumerate(material_dirs):
        maps = load_material(folder, size)
        metadata[_write_sample(root, i, Path(folder).name, maps, dirty, seed)] = Path(folder).name
    _write_metadata(root, metadata)
    return metadata


def write_synthetic_dataset(root: str | Path, num_samples: int = 8, size: int = 64, dirty: bool = True,
                            seed: int = 0) -> dict[str, str]:
    """``num_samples`` procedural materials (``material_XXXX``); returns the metadata written."""
    root = Path(root)
    metadata = {}
    for i in range(num_samples):
        name = f"material_{i:04d}"
        metadata[_write_sample(root, i, name, make_material(i, size, seed), dirty, seed)] = name
    _write_metadata(root, metadata)
    return metadata


def _write_metadata(root: Path, metadata: dict[str, str]) -> None:
    path = root / "input" / "render_metadata.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
