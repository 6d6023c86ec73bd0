"""Paired patch dataset over large photos, a grouping sampler, and synthetic portraits.

Decoding a 6000×4000 JPEG costs far more than cutting a 2048 px patch out of it, so the dataset keeps
the last decoded image(s) of its worker in a small cache and :class:`GroupedPatchSampler` hands out
all patches of one image consecutively (image order and patch order within an image both shuffled
from ``(seed, epoch)``). :class:`GroupedBatchSampler` then lays the batches out so that each DataLoader
worker receives whole images, not every other batch of every image. Each image is then decoded about
once per epoch in total instead of once per patch.

Patches leave the dataset as ``uint8``: a 2048² RGB pair is 25 MB instead of 100 MB in float32, and
that is what each DataLoader worker copies into shared memory and each step copies to the GPU.
:func:`to_model` converts a batch to 0..1 floats where it lands (on the device, in training). A set
that holds a 16-bit file is the exception: all its pairs are decoded as float32 (0..1, every bit kept),
and its patches leave as float32.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from abpn_retouch.masks import MaskRecipe, coverage, full_resolution_mask, half_resolution
from shared.errors import DataError
from shared.images import (
    image_bit_depth,
    match_by_stem,
    pair_by_stem,
    read_image,
    read_image_size,
)
from shared.sampler import epoch_permutation
from shared.tiling import extract_patch, patch_grid

PAIR_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


class ImageSource:
    """One (input, retouched) pair: its name, its size, and how to decode it."""

    name: str
    size: tuple[int, int]  # (height, width)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _header_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    width, height = read_image_size(path)  # the shared reader's guards, bomb check included
    return height, width


def read_full_precision(path: str | os.PathLike, full_precision: bool | None = None) -> np.ndarray:
    """An RGB image as ``uint8`` (8-bit files) or ``float32`` in 0..1 (16-bit files, all 16 bits kept).

    ``full_precision`` forces float32 (True) or 8 bits (False); None decides from the file header.
    """
    if full_precision is None:
        full_precision = image_bit_depth(path) == 16
    return read_image(path, dtype="float32" if full_precision else "uint8")


class FilePair(ImageSource):
    """A pair of files with the same base name in ``image_dir`` and ``gt_dir``.

    ``full_precision``: decode as float32 in 0..1 (set for every pair of a set holding a 16-bit file, so
    that a batch never mixes dtypes), else as ``uint8``.
    """

    def __init__(self, image_path: Path, gt_path: Path, full_precision: bool = False) -> None:
        self.image_path, self.gt_path = image_path, gt_path
        self.name = image_path.stem
        self.full_precision = full_precision
        self.size = _header_size(image_path)
        gt_size = _header_size(gt_path)
        if gt_size != self.size:
            raise DataError(f"{gt_path}: retouched image is {gt_size[1]}×{gt_size[0]} but its input "
                            f"{image_path.name} is {self.size[1]}×{self.size[0]}")

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        image = read_full_precision(self.image_path, self.full_precision)
        target = read_full_precision(self.gt_path, self.full_precision)
        if image.shape != target.shape:  # header lied (e.g. EXIF-less rotation): still refuse clearly
            raise DataError(f"{self.gt_path}: decoded size {target.shape[:2]} differs from {self.image_path}")
        return image, target


def synthetic_portrait(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A procedural "portrait" pair: (input with blemishes and uneven skin, cleanly retouched target).

    A face-like ellipse of random skin tone over a gradient background, with hair, eyes and mouth;
    the input adds small dark/red spots and blotchy darkening on the skin, and the target brightens
    the under-eye area: local edits, as in portrait retouching, with most pixels unchanged.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = yy / height, xx / width
    top, bottom = rng.uniform(0.2, 0.9, 3), rng.uniform(0.1, 0.7, 3)
    image = top[None, None] * (1 - yn[..., None]) + bottom[None, None] * yn[..., None]
    cy, cx = rng.uniform(0.45, 0.55), rng.uniform(0.4, 0.6)
    ry, rx = rng.uniform(0.28, 0.36), rng.uniform(0.2, 0.27)
    face = ((yn - cy) / ry) ** 2 + ((xn - cx) / rx) ** 2 < 1.0
    tone = np.array([rng.uniform(0.65, 0.95), rng.uniform(0.45, 0.7), rng.uniform(0.35, 0.6)], np.float32)
    shading = 1.0 - 0.25 * (((yn - cy) / ry) ** 2 + ((xn - cx) / rx) ** 2)
    image[face] = (tone[None] * shading[face][:, None])
    hair = (((yn - (cy - ry * 0.8)) / (ry * 0.5)) ** 2 + ((xn - cx) / (rx * 1.1)) ** 2 < 1.0) & (yn < cy - ry * 0.4)
    image[hair] = rng.uniform(0.05, 0.35, 3)
    for side in (-1, 1):
        eye = ((yn - (cy - ry * 0.15)) / (ry * 0.07)) ** 2 + ((xn - (cx + side * rx * 0.4)) / (rx * 0.18)) ** 2 < 1
        image[eye] = (0.1, 0.08, 0.07)
    mouth = ((yn - (cy + ry * 0.5)) / (ry * 0.06)) ** 2 + ((xn - cx) / (rx * 0.35)) ** 2 < 1
    image[mouth] = (0.6, 0.2, 0.2)
    skin = (face & ~hair).astype(np.float32)
    target = image.copy()
    # Retouch edit 1: brighten under the eyes (local dodge).
    for side in (-1, 1):
        d2 = ((yn - (cy + ry * 0.02)) / (ry * 0.1)) ** 2 + ((xn - (cx + side * rx * 0.4)) / (rx * 0.25)) ** 2
        target += (0.08 * np.exp(-d2) * skin)[..., None]
    source = target.copy()
    # Blemishes and blotches exist only in the input; the retouched target is clean.
    for _ in range(int(rng.integers(6, 14))):
        by, bx = rng.uniform(cy - ry * 0.8, cy + ry * 0.8), rng.uniform(cx - rx * 0.8, cx + rx * 0.8)
        radius = rng.uniform(0.008, 0.02)
        spot = np.exp(-(((yn - by) ** 2 + ((xn - bx) * width / height) ** 2) / (2 * radius**2))) * skin
        tint = np.array([rng.uniform(-0.1, 0.0), rng.uniform(-0.3, -0.15), rng.uniform(-0.3, -0.15)], np.float32)
        source += spot[..., None] * tint[None, None]
    for _ in range(2):
        by, bx = rng.uniform(cy - ry * 0.5, cy + ry * 0.5), rng.uniform(cx - rx * 0.5, cx + rx * 0.5)
        blotch = np.exp(-(((yn - by) / 0.06) ** 2 + ((xn - bx) / 0.06) ** 2)) * skin
        source -= (0.07 * blotch)[..., None]
    noise = rng.normal(0.0, 0.01, source.shape).astype(np.float32)
    to_u8 = lambda a: np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(source + noise), to_u8(target + noise)


class SyntheticPair(ImageSource):
    def __init__(self, index: int, seed: int, size: tuple[int, int]) -> None:
        self.index, self.seed, self.size = index, seed, size
        self.name = f"synthetic_{index:04d}"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return synthetic_portrait(self.seed * 100_003 + self.index, *self.size)


def match_pairs(image_dir: str | os.PathLike, gt_dir: str | os.PathLike, strict: bool = True
                ) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """``(pairs, unpaired)``: the files of the two folders with the same base name, and the others.

    The spec uses only the files whose base name is in both folders. ``strict`` refuses any unpaired
    file instead; a folder pair where nothing matches, and a base name twice in one folder, are refused
    either way (with :func:`shared.images.pair_by_stem`'s one-line errors).
    """
    if strict:
        return pair_by_stem(image_dir, gt_dir, PAIR_EXTENSIONS), []
    pairs, only_a, only_b = match_by_stem(image_dir, gt_dir, PAIR_EXTENSIONS)
    if not pairs:
        pair_by_stem(image_dir, gt_dir, PAIR_EXTENSIONS)  # raises its "no matching file" error
    return pairs, sorted(only_a + only_b)


def unpaired_note(unpaired: Sequence[Path], paired: int, shown: int = 5) -> str:
    """The one line a run prints about the files it leaves out for want of a partner."""
    names = ", ".join(str(p) for p in unpaired[:shown]) + (", ..." if len(unpaired) > shown else "")
    return (f"note: {len(unpaired)} unpaired file(s) left out, {paired} pair(s) used (no file of the same base "
            f"name in the other folder; --strict-pairs refuses them): {names}")


def file_sources(image_dir: str | os.PathLike, gt_dir: str | os.PathLike, strict: bool = True,
                 unpaired: list[Path] | None = None) -> list[ImageSource]:
    """Pairs by matching base name (jpg/png/tif) in ``image_dir`` and ``gt_dir`` (see :func:`match_pairs`).

    Without ``strict`` the files left unpaired are appended to ``unpaired`` when given. If any file is
    16-bit, every pair is decoded as float32 (:class:`FilePair`), so none loses precision.
    """
    pairs, left_out = match_pairs(image_dir, gt_dir, strict)
    if unpaired is not None:
        unpaired.extend(left_out)
    full = any(image_bit_depth(path) == 16 for pair in pairs for path in pair)
    return [FilePair(a, b, full) for a, b in pairs]


def synthetic_sources(count: int, size: tuple[int, int], seed: int = 0) -> list[ImageSource]:
    return [SyntheticPair(i, seed, size) for i in range(count)]


def split_validation(sources: Sequence[ImageSource], fraction: float, seed: int = 0
                     ) -> tuple[list[ImageSource], list[ImageSource]]:
    """``(train, validation)``: ``round(fraction * n)`` whole pairs held out (at least one when
    ``fraction > 0`` and there are two or more pairs, never all), chosen by ``seed``.

    Whole pairs, not patches: patches of one photo overlap and share its edit, so a patch split would
    validate on what it trained on.
    """
    sources = list(sources)
    if fraction <= 0 or len(sources) < 2:
        return sources, []
    count = min(max(round(fraction * len(sources)), 1), len(sources) - 1)
    held = set(np.random.default_rng(seed).permutation(len(sources))[:count].tolist())
    return ([s for i, s in enumerate(sources) if i not in held], [s for i, s in enumerate(sources) if i in held])


def flips_for(seed: int, epoch: int, index: int) -> bool:
    """Whether patch ``index`` is mirrored left–right in ``epoch``: a function of the three alone, so a
    resumed run and every DataLoader worker agree."""
    return bool(np.random.default_rng([seed, epoch, index]).integers(2))


def mean_mask_coverage(sources: Sequence[ImageSource], recipe: MaskRecipe, limit: int = 32) -> tuple[float, int]:
    """Mean GT-mask coverage over (up to ``limit``, evenly spaced) pairs, and how many were measured."""
    if not sources:
        return 0.0, 0
    picks = sorted(set(np.linspace(0, len(sources) - 1, min(limit, len(sources))).round().astype(int).tolist()))
    values = [coverage(full_resolution_mask(*sources[i].load(), recipe)) for i in picks]
    return float(np.mean(values)), len(values)


@dataclass(frozen=True)
class PatchRef:
    image: int
    top: int
    left: int


class PatchDataset(Dataset):
    """Overlapping ``patch_size`` patches (every ``stride`` px) of every pair; length = patch count.

    Items are dicts: ``input``, ``target`` ``(3, P, P)`` ``uint8`` (see :func:`to_model`), ``mask``
    ``(1, P/2, P/2)`` float32 in 0..1 (the GT mask recipe on the whole pair, cut to the patch), ``image``
    (pair index). The last patch of a row or column ends flush with the image edge (see
    :func:`shared.tiling.patch_grid` with ``flush=True``); only images smaller than a patch are
    reflect-padded (``cv2.BORDER_REFLECT``).
    ``cache_images`` decoded pairs are kept per worker (0 = decode per patch). With ``flip``, input,
    target and mask of a patch are mirrored left–right together, for half the patches of each epoch
    (:meth:`set_epoch`; which ones depends on ``seed``, the epoch and the index only). Only left–right:
    an upside-down photo is not a photo a retoucher edits, and tone edits depend on where sky and ground are.
    With ``balance``, each pair's patches are repeated up to the largest pair's count.
    """

    def __init__(self, sources: Sequence[ImageSource], patch_size: int, stride: int,
                 recipe: MaskRecipe = MaskRecipe(), cache_images: int = 2, pad_small: bool = False,
                 flip: bool = False, seed: int = 0, balance: bool = False) -> None:
        if patch_size < 8 or patch_size % 2:
            raise DataError(f"--patch-size must be an even number >= 8, got {patch_size}")
        if stride < 1:
            raise DataError(f"--stride must be positive, got {stride}")
        if not sources:
            raise DataError("no image pairs to train on")
        self.sources, self.patch_size, self.stride = list(sources), patch_size, stride
        self.recipe, self.cache_images = recipe, cache_images
        self.flip, self.seed, self.epoch = flip, seed, 0
        per_image: list[list[PatchRef]] = []
        for index, source in enumerate(self.sources):
            height, width = source.size
            if min(height, width) < patch_size and not pad_small:
                raise DataError(f"{getattr(source, 'image_path', source.name)}: image is {width}×{height}, smaller "
                                f"than --patch-size {patch_size} (lower --patch-size, or --pad-small to reflect-pad)")
            per_image.append([PatchRef(index, t, left) for t, left in patch_grid(height, width, patch_size, stride, flush=True)])
        if balance:
            # Every pair as many patches as the largest: a small photo (a 200 px face) would otherwise be a
            # few patches among hundreds of a large one's, and its kind of edit would hardly be learnt.
            most = max(len(refs) for refs in per_image)
            per_image = [(refs * math.ceil(most / len(refs)))[:most] for refs in per_image]
        self.patches: list[PatchRef] = []
        self.groups: list[list[int]] = []
        for refs in per_image:
            self.groups.append(list(range(len(self.patches), len(self.patches) + len(refs))))
            self.patches += refs
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self.decode_count = 0

    def __len__(self) -> int:
        return len(self.patches)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose flips ``__getitem__`` applies (set before the epoch's DataLoader iterator starts)."""
        self.epoch = epoch

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        image, target = self.sources[index].load()
        # On the whole pair, not per patch: the tone-curve reference is the photo's global edit, which a
        # patch alone would estimate differently from the evaluation (which masks whole images).
        pair = (image, target, full_resolution_mask(image, target, self.recipe))
        self.decode_count += 1
        if self.cache_images > 0:
            self._cache[index] = pair
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return pair

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        ref = self.patches[idx]
        image, target, full_mask = self._decoded(ref.image)
        patch_in = extract_patch(image, ref.top, ref.left, self.patch_size)
        patch_gt = extract_patch(target, ref.top, ref.left, self.patch_size)
        patch_mask = extract_patch(full_mask, ref.top, ref.left, self.patch_size)
        if self.flip and flips_for(self.seed, self.epoch, idx):
            patch_in, patch_gt, patch_mask = patch_in[:, ::-1], patch_gt[:, ::-1], patch_mask[:, ::-1]
        mask = half_resolution(np.ascontiguousarray(patch_mask))
        return {
            "input": _channels_first(patch_in),
            "target": _channels_first(patch_gt),
            "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
            "image": torch.tensor(ref.image),
        }


def _channels_first(patch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images (0..255) → float32 in 0..1; float images pass unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def to_model(batch: dict[str, torch.Tensor], device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs, targets, masks)`` of a :class:`PatchDataset` batch (or item) as the model and losses take
    them: moved to ``device`` as ``uint8``, then made 0..1 floats there."""
    return tuple(to_unit(batch[key].to(device, non_blocking=True)) for key in ("input", "target", "mask"))


class GroupedPatchSampler(Sampler[int]):
    """Shuffles image order and patch order within each image, keeping an image's patches together.

    Both orders come from ``shared.sampler``'s ``(seed, epoch)`` permutation, as every trainer's data
    order does: the images in the permutation of the images, each image's patches in the order the
    permutation of all patches visits them. ``mixed``: the permutation of all patches itself, images
    interleaved (for data whose every pair stays decoded: batches of one photo each pull the weights
    towards that photo's global edit in turn). Under DDP the epoch's sequence is padded (by wrapping) to a
    multiple of ``world_size`` and cut into contiguous equal chunks, one per rank (not dealt round-robin
    as ``EpochSampler`` does), so every rank runs the same number of steps and decodes (almost) only its
    own images. The order depends on ``(seed, epoch)`` alone; ``set_epoch(epoch,
    skip)`` drops the first ``skip`` indices, so a run resumed mid-epoch sees exactly the rest.
    """

    def __init__(self, groups: Sequence[Sequence[int]], shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, mixed: bool = False) -> None:
        self.groups = [list(g) for g in groups]
        self.mixed = mixed
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.epoch, self.skip = 0, 0
        self.total = sum(len(g) for g in self.groups)
        self.per_rank = math.ceil(self.total / world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def epoch_order(self) -> list[int]:
        """This rank's full sequence for the current epoch (before ``skip``)."""
        order = [index for group in self.groups for index in group]
        if self.shuffle and self.mixed:
            order = [order[k] for k in epoch_permutation(self.total, self.seed, self.epoch)]
        elif self.shuffle:
            # place[k]: where the k-th patch of ``order`` comes in the permutation of all patches.
            place = torch.argsort(torch.tensor(epoch_permutation(self.total, self.seed, self.epoch))).tolist()
            bounds = list(itertools.accumulate(map(len, self.groups), initial=0))
            order = [order[k] for image in epoch_permutation(len(self.groups), self.seed, self.epoch)
                     for k in sorted(range(bounds[image], bounds[image + 1]), key=place.__getitem__)]
        padded = (order * math.ceil(self.per_rank * self.world_size / max(len(order), 1)))[
            : self.per_rank * self.world_size]
        return padded[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.skip :])

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of a :class:`GroupedPatchSampler` sequence, placed so each DataLoader worker gets whole images.

    The DataLoader deals batch ``i`` to worker ``i % num_workers``, so plain consecutive batches would
    spread every image over all workers and each would decode it. Here the rank's sequence is cut into
    ``num_workers`` contiguous runs, run ``w`` exactly filling batch slots ``w, w + W, w + 2W, ...``: a
    worker sees one stretch of the sequence, i.e. whole images except where two runs meet (at most
    ``W - 1`` images per epoch are decoded twice). Batch count and sizes are those of plain batching
    (``ceil(n / batch_size)``, only the last one short), so DDP ranks still step together, and with 0 or 1
    workers the batches are exactly the plain ones.

    ``set_epoch(epoch, skip)`` drops the first ``skip`` batches for an exact mid-epoch resume. The
    DataLoader then deals the remaining batch ``j`` to worker ``(j - skip) % W``: still one run per
    worker, only relabelled. The layout depends on the worker count, so a resume with another
    ``--num-workers`` must pass the interrupted run's count as ``layout_workers`` for that epoch.
    """

    def __init__(self, sampler: GroupedPatchSampler, batch_size: int, num_workers: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.batch_size, self.num_workers = sampler, batch_size, num_workers
        self.skip, self.layout_workers = 0, max(num_workers, 1)

    def set_epoch(self, epoch: int, skip: int = 0, layout_workers: int | None = None) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip
        self.layout_workers = max(self.num_workers if layout_workers is None else layout_workers, 1)

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (before ``skip``)."""
        order = self.sampler.epoch_order()
        sizes = [min(self.batch_size, len(order) - start) for start in range(0, len(order), self.batch_size)]
        batches: list[list[int]] = [[] for _ in sizes]
        start = 0
        for worker in range(self.layout_workers):
            for slot in range(worker, len(sizes), self.layout_workers):
                batches[slot] = order[start : start + sizes[slot]]
                start += sizes[slot]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.epoch_batches()[self.skip :])

    def __len__(self) -> int:
        return max(math.ceil(self.sampler.per_rank / self.batch_size) - self.skip, 0)


def patch_loader(dataset: PatchDataset, batch_size: int, num_workers: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, mixed: bool = False, **loader_kwargs) -> DataLoader:
    """The training loader: shuffled grouped (or ``mixed``) patches, batches laid out per worker (see
    ``loader.batch_sampler``, whose ``set_epoch`` starts each epoch)."""
    sampler = GroupedPatchSampler(dataset.groups, shuffle=True, seed=seed, rank=rank, world_size=world_size,
                                  mixed=mixed)
    return DataLoader(dataset, batch_sampler=GroupedBatchSampler(sampler, batch_size, num_workers),
                      num_workers=num_workers, **loader_kwargs)
