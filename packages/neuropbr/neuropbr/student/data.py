"""Student loader: original renders and ground truth from the PNGs, teacher predictions from shards.

Items are ``(views, target, teacher)``: ``views`` ``(3, 3, image_size, image_size)`` normalised with
the config's mean/std; ``target`` and ``teacher`` ``(8, output_size, output_size)`` stacked as
albedo, roughness, metallic, normal (:mod:`neuropbr.maps`). Without shards ``teacher`` is an empty
tensor and the loss uses the ground truth only.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuropbr.maps import MAP_NAMES, decode_normal, maps_to_tensor, resize_maps
from neuropbr.shards import ShardIndex
from neuropbr.student.config import StudentConfig
from neuropbr.utils.dataset import check_headers, load_metadata
from shared.errors import DataError
from shared.images import read_image, to_tensor

SOURCES_BY_CURRICULUM = {0: ("clean",), 1: ("clean", "dirty"), 2: ("dirty",)}
VIEW_FILES = ("0.png", "1.png", "2.png")


def discover_samples(input_dir: str | os.PathLike, output_dir: str | os.PathLike, curriculum: int = 1,
                     metadata_path: str | os.PathLike | None = None) -> list[tuple[str, Path, Path]]:
    """``(key, sample_dir, material_dir)`` for every usable sample, keys like ``clean/sample_0003``.

    Raises :class:`DataError` for the spec's "Common Issues": missing ``render_metadata.json``, a sample
    missing from it, and no samples found; and, as the teacher's loader does, for a malformed metadata
    file or entry and for a view or map whose header is not a readable image.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    for folder, flag in ((input_dir, "--input-dir"), (output_dir, "--output-dir")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {flag} folder not found")
    meta_path = Path(metadata_path) if metadata_path else input_dir / "render_metadata.json"
    metadata = load_metadata(meta_path)
    samples, skipped, checked = [], [], set()
    for source in SOURCES_BY_CURRICULUM[curriculum]:
        folder = input_dir / source
        if not folder.is_dir():
            continue
        for sample_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sample_")):
            material = metadata.get(sample_dir.name)
            if material is None:
                raise DataError(f"{meta_path}: KeyError {sample_dir.name}: the metadata does not list this sample folder")
            mat_dir = output_dir / material
            missing = [sample_dir / v for v in VIEW_FILES if not (sample_dir / v).is_file()]
            missing += [mat_dir / f"{m}.png" for m in MAP_NAMES if not (mat_dir / f"{m}.png").is_file()]
            if missing:
                skipped.append(f"{source}/{sample_dir.name} (missing {missing[0]})")
                continue
            check_headers([sample_dir / v for v in VIEW_FILES], mat_dir, checked)
            samples.append((f"{source}/{sample_dir.name}", sample_dir, mat_dir))
    if skipped:
        print(f"warning: skipped {len(skipped)} incomplete sample(s), e.g. {'; '.join(skipped[:3])}", file=sys.stderr)
    if not samples:
        wanted = " and ".join(f"{input_dir / s}" for s in SOURCES_BY_CURRICULUM[curriculum])
        raise DataError(f"No samples found in {wanted} with three views {{0,1,2}}.png and complete maps in {output_dir}")
    return samples


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    batched = x if x.dim() == 4 else x[None]
    out = F.interpolate(batched, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=batched.shape[-1] > size)
    return out if x.dim() == 4 else out[0]


def read_views(paths: list[Path], size: int, mean, std) -> torch.Tensor:
    """Three RGB renders → ``(3, 3, size, size)`` normalised."""
    views = torch.stack([_resize(to_tensor(read_image(p)), size) for p in paths])
    return (views - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def read_maps(material_dir: Path, size: int) -> dict[str, torch.Tensor]:
    maps = {}
    for name in MAP_NAMES:
        mode = "L" if name in ("roughness", "metallic") else "RGB"
        maps[name] = to_tensor(read_image(material_dir / f"{name}.png", mode=mode))[None]
    maps["normal"] = decode_normal(maps["normal"])
    return {k: v[0] for k, v in resize_maps(maps, (size, size)).items()}


class _TeacherLookup:
    """Teacher predictions by key, resized to the student's output size (normals re-normalised)."""

    def __init__(self, shards_dir: str | os.PathLike | None, output_size: int) -> None:
        self.index = ShardIndex(shards_dir) if shards_dir else None
        self.output_size = output_size

    def check(self, keys: list[str]) -> None:
        if self.index is None:
            return
        missing = [k for k in keys if k not in self.index]
        if missing:
            raise DataError(f"{self.index.dir}: {len(missing)} samples have no teacher prediction (e.g. {missing[0]}); "
                            "run teacher_infer.py over the same data and curriculum")

    def __call__(self, key: str) -> torch.Tensor:
        if self.index is None:
            return torch.zeros(0)
        maps = {k: v[None] for k, v in self.index[key].items()}
        return maps_to_tensor(resize_maps(maps, (self.output_size, self.output_size)))[0]


class StudentDataset(Dataset):
    """PNG renders + ground truth (resized to ``image_size`` / ``output_size``) + teacher shards."""

    def __init__(self, cfg: StudentConfig, input_dir, output_dir, shards_dir=None, metadata_path=None) -> None:
        self.cfg = cfg
        self.samples = discover_samples(input_dir, output_dir, cfg.data.render_curriculum, metadata_path)
        self.teacher = _TeacherLookup(shards_dir, cfg.data.output_size)
        self.teacher.check(self.keys)

    @property
    def keys(self) -> list[str]:
        return [k for k, _, _ in self.samples]

    @property
    def group_keys(self) -> list[str]:
        return [m.name for _, _, m in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key, sample_dir, mat_dir = self.samples[idx]
        d = self.cfg.data
        views = read_views([sample_dir / v for v in VIEW_FILES], d.image_size, d.mean, d.std)
        target = maps_to_tensor(read_maps(mat_dir, d.output_size))
        return views, target, self.teacher(key)


class SyntheticStudentDataset(Dataset):
    """The teacher's procedural ``--synthetic`` materials at the student's sizes, plus teacher shards.

    Sample ``i`` depends only on ``(seed, i)`` (and the size), and its key is the one
    ``teacher_infer.py --synthetic`` wrote, so shards and samples line up.
    """

    def __init__(self, cfg: StudentConfig, num_samples: int = 8, seed: int = 0, shards_dir=None) -> None:
        from neuropbr.utils.synthetic import SyntheticPBRDataset

        d = cfg.data
        self.base = SyntheticPBRDataset(num_samples=num_samples, image_size=d.image_size, seed=seed,
                                        transform_mean=d.mean, transform_std=d.std,
                                        curriculum_mode=d.render_curriculum, output_size=d.output_size)
        self.teacher = _TeacherLookup(shards_dir, d.output_size)
        self.teacher.check(self.keys)

    @property
    def keys(self) -> list[str]:
        return [self.base.sample_key(i) for i in range(len(self.base))]

    @property
    def group_keys(self) -> list[str]:
        return self.base.group_keys

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        views, target = self.base[idx]
        return views, target, self.teacher(self.base.sample_key(idx))


def split_indices(groups: list[str], val_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/val split by ``seed``; a material's clean and dirty renders stay together."""
    unique = sorted(set(groups))
    g = torch.Generator().manual_seed(seed)
    order = [unique[i] for i in torch.randperm(len(unique), generator=g).tolist()]
    n_val = min(len(unique) - 1, math.ceil(len(unique) * val_ratio)) if val_ratio > 0 else 0
    val_groups = set(order[:n_val])
    train = [i for i, k in enumerate(groups) if k not in val_groups]
    val = [i for i, k in enumerate(groups) if k in val_groups]
    return train, val
