"""Blur/sharp pair datasets: GoPro folders, a flat ``blur/`` + ``sharp/`` folder, or synthetic pairs.

Training samples are cropped and augmented here, before batching, so the DataLoader moves
``patch_size²`` patches instead of whole 1280×720 frames. Every random choice of a sample comes from
a generator seeded with ``(seed, epoch, index)``: the same epoch gives the same patches whatever the
number of workers, and a resumed run sees exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from shared.errors import DataError
from shared.images import image_bit_depth, pair_by_stem, read_image

Pair = tuple[Path, Path]


# ----------------------------------------------------------------------------------------- layout
def _is_flat(folder: Path) -> bool:
    return (folder / "blur").is_dir() and (folder / "sharp").is_dir()


def find_pairs(folder: str | Path) -> list[Pair]:
    """All (blur, sharp) pairs under ``folder``.

    ``folder`` is either flat (``blur/`` and ``sharp/`` inside) or holds sequences
    (``<sequence>/blur`` and ``<sequence>/sharp``, as in GoPro's ``train/`` and ``test/``). Files pair by
    name; an unpaired file, an empty folder or a missing folder is a one-line :class:`DataError`.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: data folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if _is_flat(folder):
        return pair_by_stem(folder / "blur", folder / "sharp")
    sequences = sorted(p for p in folder.iterdir() if p.is_dir() and _is_flat(p))
    if not sequences:
        raise DataError(f"{folder}: expected blur/ and sharp/ folders, or <sequence>/blur and <sequence>/sharp")
    return [pair for seq in sequences for pair in pair_by_stem(seq / "blur", seq / "sharp")]


def split_pairs(data_dir: str | Path, val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Train and validation pairs from a data root.

    GoPro layout (``train/`` and ``test/`` inside): those splits. Flat layout: a seeded random
    ``val_fraction`` of the pairs (at least one when there are two or more) is held out.
    """
    root = Path(data_dir)
    if (root / "train").is_dir():
        train = find_pairs(root / "train")
        val = find_pairs(root / "test") if (root / "test").is_dir() else []
        return train, val
    pairs = find_pairs(root)
    if val_fraction <= 0 or len(pairs) < 2:
        return pairs, []
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * val_fraction)))
    order = np.random.default_rng(seed).permutation(len(pairs))
    val_idx = set(order[:n_val].tolist())
    return ([p for i, p in enumerate(pairs) if i not in val_idx], [p for i, p in enumerate(pairs) if i in val_idx])


# ---------------------------------------------------------------------------------- transforms
def read_full_precision(path: str | Path) -> np.ndarray:
    """``(H, W, 3)``: uint8 for an 8-bit file, float32 in 0..1 for a 16-bit one (no precision lost)."""
    if image_bit_depth(path) == 16:
        return read_image(path, dtype="float32")
    return read_image(path, dtype="uint8")


def to_unit_array(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8, uint16 or float → float32 in 0..1 (a contiguous copy)."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array, 0.0, 1.0).astype(np.float32)
    raise DataError(f"expected a uint8, uint16 or float image, got {array.dtype}")


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 (or uint16, or float in 0..1) → ``(3, H, W)`` float32 in [-1, 1]."""
    if np.asarray(image).dtype == np.uint8:
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()  # copy: inputs may be read-only
        return tensor / 127.5 - 1.0
    return torch.from_numpy(to_unit_array(image)).permute(2, 0, 1) * 2.0 - 1.0


def from_model_range(tensor: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] → ``(H, W, 3)`` uint8 (clipped, rounded)."""
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().byte()
    return array.permute(1, 2, 0).numpy()


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (the model's range) → [0, 1], clamped so PSNR/SSIM see displayable values."""
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def random_crop(blur: np.ndarray, sharp: np.ndarray, size: int, rng: np.random.Generator) -> Pair:
    """The same random ``size × size`` window of both images."""
    height, width = blur.shape[:2]
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    window = (slice(top, top + size), slice(left, left + size))
    return blur[window], sharp[window]


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def augment(blur: np.ndarray, sharp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Synchronised horizontal flip, vertical flip (each p=0.5) and a rotation by k·90° (k uniform)."""
    hflip, vflip = rng.random() < 0.5, rng.random() < 0.5
    k = int(rng.integers(0, 4))
    out = []
    for image in (blur, sharp):
        if hflip:
            image = image[:, ::-1]
        if vflip:
            image = image[::-1]
        out.append(np.rot90(image, k))
    return out[0], out[1]


# -------------------------------------------------------------------------------------- datasets
class DeblurDataset(Dataset):
    """Blur/sharp pairs from disk, as ``(blur, sharp)`` patches.

    ``DeblurDataset(data_dir, transform=None, patch_size=256, is_training=True)``, as in the original
    project: ``data_dir`` holds ``blur/`` and ``sharp/`` (or ``<sequence>/blur`` and ``<sequence>/sharp``,
    as GoPro's ``train/`` and ``test/`` do); :meth:`from_pairs` takes a list of ``(blur, sharp)`` files.

    Training (``is_training=True``): one random ``patch_size`` crop per image per epoch (or
    ``crops_per_image``), with synchronised flips and 90° rotations; with ``synthetic_blur`` > 0, that
    fraction of the crops gets, instead of its recorded blurry input, its sharp crop blurred by a random
    linear motion kernel (up to ``SYNTHETIC_MAX_KERNEL`` px) plus a little noise: a few real frames hold
    few blur directions and lengths, and the kernels add the ones they lack. Otherwise: the centre
    ``patch_size`` crop, or the full image when ``patch_size`` is 0 (then batch size 1 unless all images
    share a size).

    Without ``transform`` each patch is a ``(3, H, W)`` float32 tensor in [-1, 1], the model's range.
    ``transform`` is given each patch as an ``(H, W, 3)`` float32 array in 0..1 and returns what the
    dataset yields, so ``transforms.Compose([ToTensor(), Normalize(0.5, 0.5)])`` from torchvision gives
    the same tensors. 16-bit files are read at full precision (float), 8-bit ones as bytes.

    Call :meth:`set_epoch` at the start of every epoch so crops change from one epoch to the next.
    """

    def __init__(self, data_dir: str | os.PathLike | None, transform: Callable[[np.ndarray], Any] | None = None,
                 patch_size: int = 256, is_training: bool = True, *, pairs: Sequence[Pair] | None = None,
                 seed: int = 0, crops_per_image: int = 1, cache: bool = False,
                 synthetic_blur: float = 0.0) -> None:
        if pairs is None:
            if data_dir is None:
                raise DataError("give a data folder (or pairs, through DeblurDataset.from_pairs)")
            pairs = find_pairs(data_dir)
        if not pairs:
            raise DataError("no image pairs to load")
        if is_training and patch_size <= 0:
            raise DataError(f"patch_size must be positive for training, got {patch_size}")
        if crops_per_image < 1:
            raise DataError(f"crops_per_image must be >= 1, got {crops_per_image}")
        if not 0.0 <= synthetic_blur <= 1.0:
            raise DataError(f"synthetic_blur must be in [0, 1], got {synthetic_blur}")
        self.data_dir = data_dir
        self.pairs = list(pairs)
        self.transform = transform
        self.patch_size = patch_size
        self.is_training = is_training
        self.seed = seed
        # A 1280×720 frame holds dozens of 128-px patches: with few frames, one crop each per epoch
        # makes epochs of a step or two, most of their time spent validating and restarting workers.
        self.crops_per_image = crops_per_image if is_training else 1
        self.synthetic_blur = synthetic_blur if is_training else 0.0
        self.epoch = 0
        # Decoding two 1280×720 PNGs per patch costs as much as a step of a small model on a CPU.
        # Loaded here, in the main process, so that forked DataLoader workers share the arrays.
        self._cache = [self._read(i) for i in range(len(self.pairs))] if cache else None

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair], transform: Callable[[np.ndarray], Any] | None = None,
                   patch_size: int = 256, is_training: bool = True, **kwargs: Any) -> DeblurDataset:
        """The dataset of an explicit list of ``(blur, sharp)`` files (a train/validation split)."""
        return cls(None, transform, patch_size, is_training, pairs=pairs, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.crops_per_image

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Both images as ``(H, W, 3)`` (uint8, or float32 for 16-bit files), checked to match and to
        hold one patch."""
        index %= len(self.pairs)
        if self._cache is not None:
            return self._cache[index]
        return self._read(index)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        blur_path, sharp_path = self.pairs[index]
        blur, sharp = read_full_precision(blur_path), read_full_precision(sharp_path)
        if blur.shape != sharp.shape:
            raise DataError(f"{blur_path}: size {blur.shape[1]}×{blur.shape[0]} differs from its sharp image "
                            f"{sharp_path} ({sharp.shape[1]}×{sharp.shape[0]})")
        if self.patch_size and min(blur.shape[:2]) < self.patch_size:
            raise DataError(f"{blur_path}: image is {blur.shape[1]}×{blur.shape[0]}, smaller than the "
                            f"{self.patch_size}×{self.patch_size} patch (lower --patch-size)")
        return blur, sharp

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        blur, sharp = self.load_pair(index)
        if self.is_training:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            blur, sharp = random_crop(blur, sharp, self.patch_size, rng)
            blur, sharp = augment(blur, sharp, rng)
            # Drawn only when enabled, so that the crops of a run without it stay as they were.
            if self.synthetic_blur and rng.random() < self.synthetic_blur:
                blur = synthetic_blur_of(sharp, rng)
        elif self.patch_size:
            blur, sharp = center_crop(blur, self.patch_size), center_crop(sharp, self.patch_size)
        if self.transform is not None:
            return self.transform(to_unit_array(blur)), self.transform(to_unit_array(sharp))
        return to_model_range(blur), to_model_range(sharp)


def motion_kernel(rng: np.random.Generator, max_length: int = 15) -> np.ndarray:
    """A normalised linear motion-blur kernel of random length and angle (odd square, float32)."""
    length = float(rng.uniform(3, max_length))
    angle = float(rng.uniform(0, math.pi))
    size = int(math.ceil(length)) | 1
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = (size - 1) / 2
    # Sample the segment densely; each sample lands on its nearest pixel (a rasterised camera path).
    for t in np.linspace(-length / 2, length / 2, num=4 * size):
        x = int(round(centre + t * math.cos(angle)))
        y = int(round(centre + t * math.sin(angle)))
        kernel[min(max(y, 0), size - 1), min(max(x, 0), size - 1)] += 1.0
    return kernel / kernel.sum()


def procedural_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """A sharp ``(size, size, 3)`` float32 scene in [0, 1]: gradient, stripes, rectangles, discs, lines.

    Hard edges and fine stripes are what motion blur destroys, so the network has something to restore.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    base = rng.uniform(0, 1, 3).astype(np.float32)
    slope = rng.uniform(-0.4, 0.4, (2, 3)).astype(np.float32)
    image = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    period = rng.uniform(3, 12) / size
    stripes = (np.sin((xx * math.cos(rng.uniform(0, math.pi)) + yy) / period) > 0).astype(np.float32)
    image = image + 0.15 * stripes[..., None]
    for _ in range(int(rng.integers(4, 10))):
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        kind = int(rng.integers(0, 3))
        cx, cy = rng.uniform(0, 1, 2)
        if kind == 0:
            w, h = rng.uniform(0.05, 0.4, 2)
            mask = (np.abs(xx - cx) < w / 2) & (np.abs(yy - cy) < h / 2)
        elif kind == 1:
            r = rng.uniform(0.03, 0.2)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        else:
            theta = rng.uniform(0, math.pi)
            mask = np.abs((xx - cx) * math.sin(theta) - (yy - cy) * math.cos(theta)) < rng.uniform(0.005, 0.02)
        image[mask] = colour
    return np.clip(image, 0, 1)


SYNTHETIC_MAX_KERNEL = 25  # px: GoPro's blur spans up to a few tens of pixels at 1280×720
SYNTHETIC_MAX_NOISE = 0.01


def synthetic_blur_of(sharp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``sharp`` (uint8, uint16 or float ``(H, W, 3)``) under a random linear motion kernel plus Gaussian
    noise, in ``sharp``'s dtype (quantised as a recorded frame would be)."""
    blurred = blur_image(to_unit_array(sharp), motion_kernel(rng, SYNTHETIC_MAX_KERNEL),
                         float(rng.uniform(0, SYNTHETIC_MAX_NOISE)), rng)
    if sharp.dtype == np.uint8:
        return np.round(blurred * 255).astype(np.uint8)
    if sharp.dtype == np.uint16:
        return np.round(blurred * 65535).astype(np.uint16)
    return blurred.astype(np.float32)


def blur_image(image: np.ndarray, kernel: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve an ``(H, W, 3)`` float image with ``kernel`` (reflect border) and add Gaussian noise."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)
    pad = kernel.shape[0] // 2
    tensor = F.pad(tensor, (pad, pad, pad, pad), mode="reflect")
    weight = torch.from_numpy(kernel).expand(3, 1, *kernel.shape).contiguous()
    blurred = F.conv2d(tensor, weight, groups=3)[0].permute(1, 2, 0).numpy()
    blurred = blurred + rng.normal(0, noise_std, blurred.shape).astype(np.float32)
    return np.clip(blurred, 0, 1)


class SyntheticDeblurDataset(Dataset):
    """Procedural sharp scenes blurred by random linear motion kernels plus noise (``--synthetic``).

    Sample ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)`` for training and of
    ``(seed, i)`` for validation, so validation scores are comparable across epochs.
    """

    def __init__(self, length: int = 64, size: int = 256, training: bool = True, seed: int = 0,
                 max_kernel: int = 15, max_noise: float = 0.02) -> None:
        if length < 1 or size < 16:
            raise DataError(f"synthetic data needs length >= 1 and size >= 16, got {length} and {size}")
        self.length, self.size, self.training, self.seed = length, size, training, seed
        self.max_kernel, self.max_noise = max_kernel, max_noise
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(blur, sharp)`` as uint8 ``(size, size, 3)`` arrays."""
        key = (self.seed, self.epoch, index) if self.training else (self.seed, 1_000_003, index)
        rng = np.random.default_rng(key)
        sharp = procedural_image(self.size, rng)
        blur = blur_image(sharp, motion_kernel(rng, self.max_kernel), rng.uniform(0, self.max_noise), rng)
        to_u8 = lambda a: np.round(a * 255).astype(np.uint8)  # noqa: E731
        return to_u8(blur), to_u8(sharp)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        blur, sharp = self.sample(index)
        return to_model_range(blur), to_model_range(sharp)
