"""Write a dataset in the spec's layout: render three views of each material's maps.

Sources: folders of real maps (``<material>/{albedo,roughness,metallic,normal}.png``) or procedural
materials. Output::

    <root>/input/clean/sample_XXXX/{0,1,2}.png
    <root>/input/dirty/sample_XXXX/{0,1,2}.png      (with dirty=True)
    <root>/input/render_metadata.json
    <root>/output/<name>/{albedo,roughness,metallic,normal}.png

A handful of real materials makes a handful of samples, too few to learn from; ``crops=N`` adds N
random crops of each material (random scale, position and flips, the normals flipped with the map),
each its own target folder ``<material>__cNNN``, listed in the metadata with ``"group": <material>``, so the
train/val split (by material) keeps all of a material's crops on one side. ``relief=(lo, hi)`` scales each
crop's surface slopes by a factor drawn in that range before rendering (the height field made steeper,
views and normal map alike), so that a few nearly flat training materials still teach normals.

From the command line (the learning benchmark's real-data recipe)::

    python -m neuropbr.utils.make_dataset MATERIALS_DIR ROOT --size 128 --crops 24 --relief 1 4
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from neuropbr.maps import maps_for_display, resize_maps
from neuropbr.utils.dataset import MAP_FILES, VIEW_FILES, load_material
from neuropbr.utils.render import DEFAULT_SETUPS, dirty_views, render_views
from neuropbr.utils.synthetic import make_material
from shared.errors import DataError, cli_entry
from shared.images import save_image

# The smallest crop side as a fraction of the material's: smaller crops would be mostly upsampling.
MIN_CROP_FRACTION = 0.25


def random_crop(maps: dict[str, torch.Tensor], size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A random square crop of full-size maps ``(C, H, W)`` (side between ``MIN_CROP_FRACTION`` of the
    material and all of it), randomly flipped, resized to ``size``.

    Flips negate the normal's matching component (x for a left-right flip, y for an up-down one), so the
    crop is a valid material that the renderer shades as it would a real one.
    """
    h, w = maps["albedo"].shape[-2:]
    full = min(h, w)
    lo = min(full, max(size, int(full * MIN_CROP_FRACTION)))
    side = int(torch.randint(lo, full + 1, (1,), generator=gen))
    top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
    out = {k: v[..., top:top + side, left:left + side] for k, v in maps.items()}
    flip_x, flip_y = (bool(b) for b in torch.randint(0, 2, (2,), generator=gen))
    sign = torch.ones(3, 1, 1)
    if flip_x:
        out = {k: v.flip(-1) for k, v in out.items()}
        sign[0] = -1
    if flip_y:
        out = {k: v.flip(-2) for k, v in out.items()}
        sign[1] = -1
    out["normal"] = out["normal"] * sign
    return {k: v[0] for k, v in resize_maps({k: v[None] for k, v in out.items()}, (size, size)).items()}


def scale_relief(normal: torch.Tensor, factor: float) -> torch.Tensor:
    """The unit normals ``(3, H, W)`` of the same surface with its height field scaled by ``factor``.

    A height field ``h`` has normal ``(-h_x, -h_y, 1)`` up to length; ``factor * h`` scales the two slope
    components, so the tangent part is scaled and the result renormalised.
    """
    scaled = torch.cat([normal[:2] * factor, normal[2:3]])
    return scaled / scaled.norm(dim=0, keepdim=True).clamp_min(1e-8)


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
                                 dirty: bool = True, seed: int = 0, crops: int = 0,
                                 relief: tuple[float, float] = (1.0, 1.0)) -> dict[str, str | dict[str, str]]:
    """One sample per material folder (the whole material at ``size``), plus ``crops`` random crops of
    each (needs ``size``), their relief scaled by a factor drawn uniformly in ``relief``; returns the
    metadata written (sample → material)."""
    root = Path(root)
    if not material_dirs:
        raise DataError("no material folders given")
    if crops and not size:
        raise DataError("crops need a size")
    if not 0 < relief[0] <= relief[1]:
        raise DataError(f"relief range must satisfy 0 < low <= high, got {relief[0]} {relief[1]}")
    metadata, index = {}, 0
    for m, folder in enumerate(material_dirs):
        name = Path(folder).name
        full = load_material(folder) if crops else None
        maps = load_material(folder, size)
        metadata[_write_sample(root, index, name, maps, dirty, seed)] = name
        index += 1
        gen = torch.Generator().manual_seed(seed * 100_003 + m)
        for c in range(crops):
            maps = random_crop(full, size, gen)
            if relief != (1.0, 1.0):  # no extra draw otherwise: the default crops stay those of earlier versions
                low, high = relief
                maps["normal"] = scale_relief(maps["normal"], low + (high - low) * float(torch.rand(1, generator=gen)))
            sample = _write_sample(root, index, f"{name}__c{c:03d}", maps, dirty, seed)
            # The crop's maps live in their own folder; its group is the material it was cut from.
            metadata[sample] = {"material_name": f"{name}__c{c:03d}", "group": name}
            index += 1
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


def material_folders(folder: str | Path) -> list[Path]:
    """The material folders (those holding all four map PNGs) directly under ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: materials folder not found")
    found = [p for p in sorted(folder.iterdir()) if p.is_dir() and all((p / f).is_file() for f in MAP_FILES.values())]
    if not found:
        raise DataError(f"{folder}: no material folders with {', '.join(MAP_FILES.values())}")
    return found


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render real material maps into a NeuroPBR dataset (input/ + output/).")
    p.add_argument("materials", help="folder of <material>/{albedo,roughness,metallic,normal}.png")
    p.add_argument("root", help="dataset root to write (input/ and output/)")
    p.add_argument("--size", type=int, default=128, help="side of the views and maps")
    p.add_argument("--crops", type=int, default=0, help="random crops per material besides the whole")
    p.add_argument("--relief", type=float, nargs=2, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
                   help="scale each crop's surface slopes by a factor drawn in [LOW, HIGH] (1 1 = as the maps are)")
    p.add_argument("--dirty", action="store_true", help="also write dirty renders")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    meta = write_dataset_from_materials(material_folders(args.materials), args.root, args.size, args.dirty,
                                        args.seed, args.crops, tuple(args.relief))
    print(f"wrote {len(meta)} sample(s) to {args.root}")
    return 0


if __name__ == "__main__":
    main()
