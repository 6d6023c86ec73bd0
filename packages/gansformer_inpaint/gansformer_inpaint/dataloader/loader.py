"""Datasets: ``extracted/`` (masked) + ``ground_truth/`` pairs with an optional ``mask/``, or synthetic.

Every item is a dict ``{"masked", "gt"}`` (3, S, S) in [-1, 1], ``"mask"`` (1, S, S) in {0, 1} with
1 = hole, and ``"name"``. The masked image is rebuilt as ``gt * (1 - mask)``-style input: outside the
hole it is the ``extracted/`` file itself, so known pixels are what the user gave.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gansformer_inpaint.dataloader.masks import derive_mask, random_mask, resize_mask
from gansformer_inpaint.dataloader.synthetic import synthetic_face
from shared.errors import DataError
from shared.images import (
    IMAGE_EXTENSIONS,
    describe_conversions,
    pair_by_stem,
    read_image,
    read_image_size,
    to_tensor,
)

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_SIZE = 16


IMAGE_LIKE = frozenset(IMAGE_EXTENSIONS) | {".gif", ".tga", ".ppm", ".pgm", ".heic", ".heif", ".avif", ".jp2", ".ico"}


def check_folder_formats(folder: Path) -> None:
    """Refuse image files in a format the spec does not support, rather than skip them silently.

    Files that are not images at all (notes, ``Thumbs.db``) are ignored, as the pairing ignores them.
    """
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if path.is_file() and suffix in IMAGE_LIKE and suffix not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{path}: unsupported image format '{suffix}'; use one of {', '.join(SUPPORTED_EXTENSIONS)}")


def load_pair(masked_path: Path, gt_path: Path | None, mask_path: Path | None, img_size: int,
              threshold: int) -> dict[str, torch.Tensor]:
    """Read, check and resize one pair (+ mask) to ``img_size``; values in [-1, 1], mask in {0, 1}."""
    masked = read_image(masked_path)
    gt = read_image(gt_path) if gt_path is not None else None
    if gt is not None and gt.shape != masked.shape:
        raise DataError(f"{masked_path}: size {masked.shape[1]}x{masked.shape[0]} differs from its ground truth "
                        f"{gt_path} ({gt.shape[1]}x{gt.shape[0]})")
    if min(masked.shape[:2]) < MIN_SIZE:
        raise DataError(f"{masked_path}: {masked.shape[1]}x{masked.shape[0]} is too small (min {MIN_SIZE} px)")
    if mask_path is not None:
        mask_np = read_image(mask_path, mode="L")
        if mask_np.shape != masked.shape[:2]:
            raise DataError(f"{mask_path}: mask size {mask_np.shape[1]}x{mask_np.shape[0]} differs from image "
                            f"{masked_path} ({masked.shape[1]}x{masked.shape[0]})")
        mask_np = (mask_np >= 128).astype(np.float32)
    elif gt is not None:
        mask_np = derive_mask(masked, gt, threshold)
    else:
        raise DataError(f"{masked_path}: no mask and no ground truth to derive one from")
    mask = resize_mask(torch.from_numpy(mask_np)[None], img_size)
    item = {"masked": resize_image(to_tensor(masked), img_size) * 2 - 1, "mask": mask}
    if gt is not None:
        item["gt"] = resize_image(to_tensor(gt), img_size) * 2 - 1
    return item


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, H, W) or (B, C, H, W) to ``size``², box filter ("area") when shrinking.

    A box filter's footprint is exactly what :func:`resize_mask` marks as hole, so a known pixel of the
    resized masked image never mixes in the hole's fill colour (an antialiased bilinear kernel is wider
    and leaks white into the ring around the hole).
    """
    batch = image if image.dim() == 4 else image[None]
    if batch.shape[-2:] != (size, size):
        shrinking = batch.shape[-1] >= size and batch.shape[-2] >= size
        mode = {"mode": "area"} if shrinking else {"mode": "bilinear", "align_corners": False}
        batch = F.interpolate(batch, size=(size, size), **mode)
    return batch if image.dim() == 4 else batch[0]


class InpaintingDataset(Dataset):
    """``root/extracted`` ↔ ``root/ground_truth`` by file name, plus ``root/mask`` (255 = hole) if present."""

    def __init__(self, root: str | Path, img_size: int = 256, mask_threshold: int = 24,
                 random_mask_prob: float = 0.0, flip: bool = False, seed: int = 0) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: dataset folder not found (expected extracted/ and ground_truth/ inside)")
        extracted, truth, masks = root / "extracted", root / "ground_truth", root / "mask"
        for folder in (extracted, truth):
            if not folder.is_dir():
                raise DataError(f"{folder}: folder not found (a dataset needs extracted/ and ground_truth/)")
            check_folder_formats(folder)
        pairs = pair_by_stem(extracted, truth, SUPPORTED_EXTENSIONS)
        mask_by_stem: dict[str, Path] = {}
        if masks.is_dir():
            check_folder_formats(masks)
            mask_by_stem = {m.stem: m for _, m in pair_by_stem(extracted, masks, SUPPORTED_EXTENSIONS)}
        self.items = [(a, b, mask_by_stem.get(a.stem)) for a, b in pairs]
        for masked_path, gt_path, mask_path in self.items:  # fail at start, not mid-epoch
            size_a, size_b = read_image_size(masked_path), read_image_size(gt_path)
            if size_a != size_b:
                raise DataError(f"{masked_path}: size {size_a[0]}x{size_a[1]} differs from its ground truth "
                                f"{gt_path} ({size_b[0]}x{size_b[1]})")
            if min(size_a) < MIN_SIZE:
                raise DataError(f"{masked_path}: {size_a[0]}x{size_a[1]} is too small (min {MIN_SIZE} px)")
            if mask_path is not None and read_image_size(mask_path) != size_a:
                size_m = read_image_size(mask_path)
                raise DataError(f"{mask_path}: mask size {size_m[0]}x{size_m[1]} differs from image "
                                f"{masked_path} ({size_a[0]}x{size_a[1]})")
        self.img_size = img_size
        self.mask_threshold = mask_threshold
        self.random_mask_prob, self.flip, self.seed = random_mask_prob, flip, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        masked_path, gt_path, mask_path = self.items[index]
        item = load_pair(masked_path, gt_path, mask_path, self.img_size, self.mask_threshold)
        item["name"] = masked_path.stem
        if self.random_mask_prob > 0 or self.flip:
            item = self.augment(item, index)
        return item

    def augment(self, item: dict, index: int) -> dict:
        """A LaMa-style random hole (strokes + boxes) instead of the file's own with ``random_mask_prob``, and a
        horizontal flip half the time when ``flip``.

        A few real pairs carry one fixed hole each, so without this the generator learns to fill those
        holes in those faces and nothing else. The draw depends only on (seed, epoch, index): the same
        in any worker and after an exact resume.
        """
        rng = np.random.default_rng([self.seed, self.epoch, index, 7])
        use_random, flip = rng.random() < self.random_mask_prob, self.flip and rng.random() < 0.5
        if use_random:
            mask = torch.from_numpy(random_mask(self.img_size, rng))[None]
            # Painted white, as the dataset's extracted/ files are; known pixels are the ground truth's.
            item["masked"], item["mask"] = item["gt"] * (1 - mask) + mask, mask
        if flip:
            for key in ("masked", "gt", "mask"):
                item[key] = item[key].flip(-1)
        return item


def file_conversion_notes(images: Iterable[Path], masks: Iterable[Path]) -> list[str]:
    """One line per data-changing conversion of these files, in the modes :func:`load_pair` reads them:
    images as RGB, masks as grayscale, both at 8 bits. Each line names its role: the same kind (alpha
    dropped, say) can turn up among the images and among the masks."""
    groups = (("images", images, "RGB"), ("masks", masks, "L"))
    return [line for role, paths, mode in groups for line in describe_conversions(paths, mode, role=role)]


def conversion_notes(datasets: Iterable[Dataset]) -> list[str]:
    """:func:`file_conversion_notes` of every file the datasets read (none for synthetic ones)."""
    items = [item for d in datasets if isinstance(d, InpaintingDataset) for item in d.items]
    return file_conversion_notes([p for masked, gt, _ in items for p in (masked, gt)],
                                 [mask for _, _, mask in items if mask is not None])


class SyntheticInpaintingDataset(Dataset):
    """Procedural faces with random free-form + box masks; item ``i`` of epoch ``e`` depends on (seed, e, i)."""

    def __init__(self, size: int = 64, img_size: int = 256, seed: int = 0) -> None:
        self.size, self.img_size, self.seed = size, img_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        # Faces are fixed per index (a dataset); masks change every epoch (augmentation).
        face = synthetic_face(self.img_size, np.random.default_rng([self.seed, index]))
        mask = random_mask(self.img_size, np.random.default_rng([self.seed, index, self.epoch + 1]))
        gt = to_tensor(face) * 2 - 1
        mask_t = torch.from_numpy(mask)[None]
        masked = gt * (1 - mask_t) + mask_t  # hole painted white, as extracted/ files are
        return {"masked": masked, "gt": gt, "mask": mask_t, "name": f"synthetic_{index:05d}"}
