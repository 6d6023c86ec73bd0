"""Student loader: the teacher's dataset (renders and ground truth from the PNGs) plus teacher shards.

Items are ``(views, target, teacher)``: ``views`` ``(3, 3, image_size, image_size)`` normalised with
the config's mean/std; ``target`` and ``teacher`` ``(8, output_size, output_size)`` stacked as
albedo, roughness, metallic, normal (:mod:`neuropbr.maps`). Without shards ``teacher`` is an empty
tensor and the loss uses the ground truth only.

Discovery, the Common-Issues errors, view and map reading (resizing, normal renormalisation) and the
train/validation split by material are the teacher's (:mod:`neuropbr.utils.dataset`), so the student
trains on the samples, the preprocessing and the held-out materials the teacher was trained with.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from neuropbr.maps import maps_to_tensor, resize_maps
from neuropbr.shards import ShardIndex
from neuropbr.student.config import StudentConfig
from neuropbr.utils.dataset import PBRDataset, train_val_split
from shared.errors import DataError

__all__ = ["StudentDataset", "SyntheticStudentDataset", "train_val_split"]


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


class _WithTeacher(Dataset):
    """A teacher dataset (``PBRDataset`` or ``SyntheticPBRDataset``) at the student's sizes + its shards."""

    def __init__(self, base, shards_dir, output_size: int) -> None:
        self.base = base
        self.teacher = _TeacherLookup(shards_dir, output_size)
        self.teacher.check(self.keys)

    @property
    def keys(self) -> list[str]:
        """Sample keys, ``<source>/<sample>``: what ``teacher_infer.py`` names the shard entries."""
        return [self.base.sample_key(i) for i in range(len(self.base))]

    @property
    def group_keys(self) -> list[str]:
        """The material of each item (the split keeps a material on one side)."""
        return self.base.group_keys

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        views, target = self.base[idx]
        return views, target, self.teacher(self.base.sample_key(idx))


class StudentDataset(_WithTeacher):
    """The spec's on-disk layout read by the teacher's :class:`PBRDataset` at ``image_size`` /
    ``output_size``, with the student's normalisation, plus teacher shards."""

    def __init__(self, cfg: StudentConfig, input_dir, output_dir, shards_dir=None, metadata_path=None) -> None:
        d = cfg.data
        base = PBRDataset(input_dir, output_dir, metadata_path, transform_mean=d.mean, transform_std=d.std,
                          image_size=d.image_size, curriculum_mode=d.render_curriculum, output_size=d.output_size)
        super().__init__(base, shards_dir, d.output_size)


class SyntheticStudentDataset(_WithTeacher):
    """The teacher's procedural ``--synthetic`` materials at the student's sizes, plus teacher shards.

    Sample ``i`` depends only on ``(seed, i)`` (and the size), and its key is the one
    ``teacher_infer.py --synthetic`` wrote, so shards and samples line up.
    """

    def __init__(self, cfg: StudentConfig, num_samples: int = 8, seed: int = 0, shards_dir=None) -> None:
        from neuropbr.utils.synthetic import SyntheticPBRDataset

        d = cfg.data
        base = SyntheticPBRDataset(num_samples=num_samples, image_size=d.image_size, seed=seed,
                                   transform_mean=d.mean, transform_std=d.std,
                                   curriculum_mode=d.render_curriculum, output_size=d.output_size)
        super().__init__(base, shards_dir, d.output_size)
