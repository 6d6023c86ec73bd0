"""Data-pipeline benchmarks: what reaches the device per batch, and how fast.

* deblur: crops taken in ``DeblurDataset.__getitem__`` (the spec's v2) vs. full 1280×720 frames
  batched and cropped in the training loop (the spec's v1), on the real GoPro pairs.
* abpn: the patch dataset, which decodes each large image once per epoch per worker, vs. decoding the
  full image for every patch.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tests.benchmarks.common import ROOT

DEBLUR_DATA = ROOT.parent / "shared" / "data" / "deblur"


class FullFrameDataset(Dataset):
    """The spec's v1: whole frames in the batch; the loop crops afterwards."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        from deblur_unet.data import to_model_range
        from shared.images import read_image

        blur, sharp = self.pairs[index]
        return to_model_range(read_image(blur)), to_model_range(read_image(sharp))


def _consume(loader, crop: int | None, batches: int) -> tuple[float, int, int]:
    """Samples/s of training-ready patches, bytes per batch moved to the device."""
    rng = np.random.default_rng(0)
    samples, moved, start, seen = 0, 0, time.perf_counter(), 0
    while seen < batches:
        for blur, sharp in loader:
            moved = blur.nbytes + sharp.nbytes  # what .to(device) would copy
            if crop is not None:  # v1: crop after batching
                top = int(rng.integers(0, blur.shape[-2] - crop + 1))
                left = int(rng.integers(0, blur.shape[-1] - crop + 1))
                blur = blur[..., top : top + crop, left : left + crop].contiguous()
                sharp = sharp[..., top : top + crop, left : left + crop].contiguous()
            samples += blur.shape[0]
            seen += 1
            if seen >= batches:
                break
    return samples / (time.perf_counter() - start), moved, samples


def _gopro_frames(folder) -> None:
    """1280×720 frames (the GoPro size) from the 512×512 real crops, mirror-padded, as PNG pairs."""
    from shared.images import list_images, read_image, save_image

    for side in ("blur", "sharp"):
        for path in list_images(DEBLUR_DATA / side):
            image = read_image(path)
            pad_h, pad_w = max(720 - image.shape[0], 0), max(1280 - image.shape[1], 0)
            frame = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                           mode="symmetric")
            save_image(folder / side / path.name, frame[:720, :1280])


def deblur_section(batches: int = 10, batch_size: int = 4, patch: int = 256) -> str:
    import tempfile
    from pathlib import Path

    from deblur_unet.data import DeblurDataset, find_pairs

    if not DEBLUR_DATA.exists():
        return f"(skipped: {DEBLUR_DATA} not found)"
    folder = Path(tempfile.mkdtemp(prefix="deblur_frames_"))
    _gopro_frames(folder)
    pairs = find_pairs(folder)
    crop_loader = DataLoader(DeblurDataset(pairs, patch_size=patch, training=True), batch_size=batch_size,
                             shuffle=True, generator=torch.Generator().manual_seed(0))
    full_loader = DataLoader(FullFrameDataset(pairs), batch_size=batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(0))
    crop_rate, crop_bytes, _ = _consume(crop_loader, None, batches)
    full_rate, full_bytes, _ = _consume(full_loader, patch, batches)
    cut = 1 - crop_bytes / full_bytes
    return "\n".join([
        f"GoPro-size frames (1280×720, made from the real 512² GoPro crops by mirroring), batch {batch_size}, {patch}×{patch} patches, 0 workers, {batches} batches.", "",
        "| pipeline | bytes per batch to device | samples/s |", "| --- | --- | --- |",
        f"| crop in dataset (ours, spec v2) | {crop_bytes / 2**20:.1f} MiB | {crop_rate:.1f} |",
        f"| full frames, crop in loop (spec v1) | {full_bytes / 2**20:.1f} MiB | {full_rate:.1f} |", "",
        f"Bytes cut: {cut:.1%} (the spec claims 94%; 256²/(1280·720) gives 92.9% for one patch per frame). "
        f"Samples/s ratio: {crop_rate / full_rate:.2f}×.",
    ])

