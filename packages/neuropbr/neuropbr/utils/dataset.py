"""PBRDataset: the spec's on-disk layout, the clean/dirty render curriculum, and the train/val split.

Layout::

    input/
    ├── clean/sample_0000/{0,1,2}.png
    ├── dirty/sample_0000/{0,1,2}.png        (optional)
    └── render_metadata.json                 {"sample_0000": "wood_oak", ...}
    output/
    └── wood_oak/{albedo,roughness,metallic,normal}.png

Items are ``(inputs, targets)``: ``inputs`` ``(3, 3, H, W)`` — the three views, normalised with
``transform_mean/std``; ``targets`` ``(8, H, W)`` — albedo, roughness, metallic, normal as in
:mod:`neuropbr.maps` (split with :func:`neuropbr.maps.tensor_to_maps`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuropbr.maps import decode_normal, maps_to_tensor, resize_maps
from shared.errors import ConfigError, DataError
from shared.images import describe_conversions, read_image, read_image_size, to_tensor

VIEW_FILES = ("0.png", "1.png", "2.png")
MAP_FILES = {"albedo": "albedo.png", "roughness": "roughness.png", "metallic": "metallic.png", "normal": "normal.png"}
CURRICULUM_SOURCES = {0: ("clean",), 1: ("clean", "dirty"), 2: ("dirty",)}
# The mode each file is read in by load_views and load_material (all at 8 bits).
READ_MODES = {"views": "RGB", "albedo": "RGB", "roughness": "L", "metallic": "L", "normal": "RGB"}


class MetadataNotFoundError(DataError, FileNotFoundError):
    """``render_metadata.json`` is missing."""

    def __str__(self) -> str:
        return Exception.__str__(self)


class SampleNotInMetadataError(DataError, KeyError):
    """A ``sample_XXXX`` folder is not listed in the metadata."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return Exception.__str__(self)


def resolve_curriculum(use_dirty: bool = False, curriculum: int | None = None) -> int:
    """The render curriculum: legacy ``use_dirty=True`` with no (or 0) curriculum means 2, else ``curriculum``."""
    if use_dirty and not curriculum:
        return 2
    mode = 0 if curriculum is None else int(curriculum)
    if mode not in CURRICULUM_SOURCES:
        raise ConfigError(f"render curriculum must be 0, 1 or 2, got {curriculum!r}")
    return mode


def load_metadata(path: str | Path) -> dict[str, str]:
    """``{sample_name: material_name}``; values may also be ``{"material_name": ...}`` objects."""
    return read_metadata(path)[0]


def read_metadata(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({sample: material folder}, {sample: group})``.

    The group is the material a sample shows: the value's ``"group"`` key when it has one (a crop of a
    real material has its own target folder but belongs to the material), else the folder name.
    """
    path = Path(path)
    if not path.is_file():
        raise MetadataNotFoundError(
            f"{path}: render_metadata.json not found; create {{input_dir}}/render_metadata.json mapping "
            "sample_XXXX folders to material folder names"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object mapping sample names to materials, found {type(raw).__name__}")
    meta, groups = {}, {}
    for sample, value in raw.items():
        group = None
        if isinstance(value, dict):
            group = value.get("group")
            value = value.get("material_name", value.get("material"))
        if not isinstance(value, str) or not value:
            raise DataError(f"{path}: entry '{sample}' must name a material folder (a string), got {value!r}")
        if group is not None and (not isinstance(group, str) or not group):
            raise DataError(f"{path}: entry '{sample}' has a 'group' that is not a name: {group!r}")
        meta[str(sample)] = value
        groups[str(sample)] = group or value
    return meta, groups


class PBRDataset(Dataset):
    """Three rendered views per sample → the sample material's four PBR maps.

    Args:
        input_dir: folder holding ``clean/`` and/or ``dirty/`` and ``render_metadata.json``.
        output_dir: folder of material folders with the four map PNGs.
        metadata_path: default ``{input_dir}/render_metadata.json``.
        transform_mean, transform_std: input normalisation (targets are not normalised).
        image_size: side the views and maps are resized to when they differ (default 2048, the native
            size, so no resize happens on spec data); ``None`` keeps every image's own size.
        use_dirty: legacy switch, same as ``curriculum_mode=2``.
        curriculum_mode: 0 clean only, 1 every render on disk (a sample present in both folders is
            queued once per source), 2 dirty only.
        output_size: side of the targets when it differs from ``image_size`` (students with an SR head).

    Raises (one-line messages, all :class:`~shared.errors.DataError`):
        MetadataNotFoundError: no metadata file (also a ``FileNotFoundError``).
        SampleNotInMetadataError: a ``sample_*`` folder missing from the metadata (also a ``KeyError``).
        DataError: "No samples found" when no complete sample is left for the curriculum.
    """

    def __init__(self, input_dir: str | Path, output_dir: str | Path, metadata_path: str | Path | None = None,
                 transform_mean: Sequence[float] = (0.5, 0.5, 0.5), transform_std: Sequence[float] = (0.5, 0.5, 0.5),
                 image_size: int | Sequence[int] | None = 2048, use_dirty: bool = False,
                 curriculum_mode: int | None = None, output_size: int | Sequence[int] | None = None) -> None:
        self.input_dir = Path(input_dir)
        self.output_dir = Path(output_dir)
        for folder, what in ((self.input_dir, "input"), (self.output_dir, "output")):
            if not folder.is_dir():
                raise DataError(f"{folder}: {what} folder not found")
        self.metadata_path = Path(metadata_path) if metadata_path else self.input_dir / "render_metadata.json"
        self.metadata, self.groups = read_metadata(self.metadata_path)
        self.mode = resolve_curriculum(use_dirty, curriculum_mode)
        self.image_size = _size(image_size)
        self.output_size = _size(output_size) if output_size else self.image_size
        self.mean = torch.tensor(list(transform_mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(transform_std), dtype=torch.float32).view(1, 3, 1, 1)
        self.entries: list[tuple[str, str, str]] = self._scan()  # (source, sample, material)

    def _scan(self) -> list[tuple[str, str, str]]:
        entries, skipped, checked = [], [], set()
        sources = CURRICULUM_SOURCES[self.mode]
        for source in sources:
            folder = self.input_dir / source
            if not folder.is_dir():
                continue
            for sample_dir in sorted(p for p in folder.glob("sample_*") if p.is_dir()):
                name = sample_dir.name
                if name not in self.metadata:
                    raise SampleNotInMetadataError(
                        f"{sample_dir}: sample '{name}' is not in {self.metadata_path}; ensure the metadata "
                        "lists every sample_* folder"
                    )
                material = self.metadata[name]
                missing = [str(sample_dir / f) for f in VIEW_FILES if not (sample_dir / f).is_file()]
                mat_dir = self.output_dir / material
                missing += [str(mat_dir / f) for f in MAP_FILES.values() if not (mat_dir / f).is_file()]
                if missing:
                    skipped.append(f"{source}/{name} (missing {missing[0]})")
                    continue
                check_headers([sample_dir / f for f in VIEW_FILES], mat_dir, checked)
                entries.append((source, name, material))
        if skipped:
            print(f"warning: skipped {len(skipped)} incomplete sample(s), e.g. {'; '.join(skipped[:3])}",
                  file=sys.stderr)
        if not entries:
            wanted = " and ".join(f"{self.input_dir / s}" for s in sources)
            raise DataError(
                f"No samples found in {wanted} for render curriculum {self.mode}: verify that "
                f"sample_*/{{0,1,2}}.png exist there and that {self.output_dir}/<material>/ holds "
                "albedo, roughness, metallic and normal PNGs"
            )
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def sample_key(self, idx: int) -> str:
        """Stable name of item ``idx``: ``<source>/<sample>`` (e.g. ``dirty/sample_0003``)."""
        source, name, _ = self.entries[idx]
        return f"{source}/{name}"

    @property
    def group_keys(self) -> list[str]:
        """Material of each item: the split keeps every sample of a material (crops, clean and dirty
        renders) on one side, so validation scores materials the model never trained on."""
        return [self.groups[name] for _, name, _ in self.entries]

    def load_views(self, idx: int) -> torch.Tensor:
        """Unnormalised views ``(3, 3, H, W)`` in [0, 1] (resized to ``image_size``)."""
        source, name, _ = self.entries[idx]
        folder = self.input_dir / source / name
        return load_views([folder / f for f in VIEW_FILES], self.image_size)

    def load_maps(self, idx: int) -> dict[str, torch.Tensor]:
        """Target maps ``(C, H, W)`` at ``output_size``."""
        _, _, material = self.entries[idx]
        return load_material(self.output_dir / material, self.output_size)

    def load_raw(self, idx: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.load_views(idx), self.load_maps(idx)

    def normalize(self, views: torch.Tensor) -> torch.Tensor:
        return (views - self.mean) / self.std

    def files(self, indices: Iterable[int] | None = None) -> dict[str, list[Path]]:
        """The files items ``indices`` (default: all) read, by role: ``views`` and each map name."""
        found: dict[str, list[Path]] = {role: [] for role in READ_MODES}
        for idx in range(len(self)) if indices is None else indices:
            source, name, material = self.entries[idx]
            found["views"] += [self.input_dir / source / name / f for f in VIEW_FILES]
            for key, file in MAP_FILES.items():
                found[key].append(self.output_dir / material / file)
        return found

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, maps = self.load_raw(idx)
        return self.normalize(views), maps_to_tensor(maps)


def conversion_notes(files: Mapping[str, Iterable[Path]]) -> list[str]:
    """One line per data-changing conversion of ``files`` (by role: ``views`` or a map name), in the
    mode that role is read in, each line prefixed with the role: a roughness map stored in colour is
    read as grayscale, an albedo stored in grayscale as RGB."""
    return [line for role, paths in files.items()
            for line in describe_conversions(paths, READ_MODES[role], role=role)]


def dataset_conversion_notes(dataset: Dataset, indices: Iterable[int] | None = None) -> list[str]:
    """:func:`conversion_notes` of the files items ``indices`` (default: all) of ``dataset`` read; none
    for procedural data. A student dataset is looked through to the teacher dataset it wraps."""
    dataset = getattr(dataset, "base", dataset)
    return conversion_notes(dataset.files(indices)) if isinstance(dataset, PBRDataset) else []


def check_headers(views: Sequence[Path], material_dir: Path, checked: set[Path]) -> None:
    """Read the headers of a sample's views and (once per material) its maps.

    A zero-byte, non-image or enormous file then stops the run at start-up, naming the file, rather
    than mid-epoch inside a DataLoader worker; a file cut short after its header still fails on read.
    """
    for path in views:
        read_image_size(path)
    if material_dir not in checked:
        for name in MAP_FILES.values():
            read_image_size(material_dir / name)
        checked.add(material_dir)


def _size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None or size == 0:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def _resize_image(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def load_views(paths: Sequence[Path], size: tuple[int, int] | int | None = None) -> torch.Tensor:
    """Three RGB images → ``(3, 3, H, W)`` in [0, 1]; resized to ``size`` when given.

    Without ``size`` the views must share one size (a :class:`DataError` names the odd one out).
    """
    size = _size(size) if not isinstance(size, tuple) else size
    views = [_resize_image(to_tensor(read_image(p, "RGB")), size) for p in paths]
    first = views[0].shape[-2:]
    for path, v in zip(paths, views, strict=True):
        if v.shape[-2:] != first:
            raise DataError(f"{path}: view is {v.shape[-1]}×{v.shape[-2]}, but {paths[0]} is {first[1]}×{first[0]}")
    return torch.stack(views)


def load_material(folder: str | Path, size: tuple[int, int] | int | None = None) -> dict[str, torch.Tensor]:
    """Read ``albedo/roughness/metallic/normal.png`` of one material (maps convention of :mod:`neuropbr.maps`).

    Grayscale roughness/metallic stored as RGB are reduced to one channel; RGBA drops alpha, 16-bit is
    scaled (see :func:`shared.images.read_image`). Maps of different sizes are resized to the albedo's
    unless ``size`` is given.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: material folder not found")
    size = _size(size) if not isinstance(size, tuple) else size
    albedo = to_tensor(read_image(folder / MAP_FILES["albedo"], "RGB"))
    rough = to_tensor(read_image(folder / MAP_FILES["roughness"], "L"))
    metal = to_tensor(read_image(folder / MAP_FILES["metallic"], "L"))
    normal = decode_normal(to_tensor(read_image(folder / MAP_FILES["normal"], "RGB")))
    target = size or tuple(albedo.shape[-2:])
    maps = {"albedo": albedo[None], "roughness": rough[None], "metallic": metal[None], "normal": normal[None]}
    return {k: v[0] for k, v in resize_maps(maps, target).items()}


def train_val_split(group_keys: Sequence[str], val_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic split of item indices by group (material), shuffled once with ``seed``.

    ``val_ratio > 0`` with at least two groups puts at least one group in validation. Every item of a
    group (a material's samples, clean and dirty) lands on the same side, so validation never sees a
    training material.
    """
    groups = sorted(set(group_keys))
    gen = torch.Generator().manual_seed(int(seed))
    order = [groups[i] for i in torch.randperm(len(groups), generator=gen).tolist()]
    n_val = 0
    if val_ratio > 0 and len(groups) > 1:
        n_val = min(len(groups) - 1, max(1, int(math.floor(len(groups) * val_ratio + 0.5))))
    val_groups = set(order[:n_val])
    train_idx = [i for i, g in enumerate(group_keys) if g not in val_groups]
    val_idx = [i for i, g in enumerate(group_keys) if g in val_groups]
    return train_idx, val_idx
