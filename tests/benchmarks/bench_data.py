"""Data-pipeline benchmarks: what reaches the device per batch, and how fast.

* deblur: crops taken in ``DeblurDataset.__getitem__`` (the spec's v2) vs. full 1280×720 frames
  batched and cropped in the training loop (the spec's v1), on the real GoPro pairs.
* abpn: the patch dataset and training loader, which decode each large image about once per epoch
  (each worker gets whole images), vs. decoding the full image for every patch.
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
    crop_loader = DataLoader(DeblurDataset.from_pairs(pairs, patch_size=patch, is_training=True), batch_size=batch_size,
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



def _large_jpegs(folder, count: int, height: int, width: int) -> None:
    """Photo-like 6000×4000 JPEG pairs (smooth structure + grain), the retouched one locally brightened."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        coarse = rng.random((height // 64 + 1, width // 64 + 1, 3))
        image = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC))
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        retouched = image.copy()
        retouched[height // 3 : height // 2, width // 3 : width // 2] = np.clip(
            retouched[height // 3 : height // 2, width // 3 : width // 2].astype(int) + 20, 0, 255)
        (folder / "original").mkdir(parents=True, exist_ok=True)
        (folder / "retouch").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "original" / f"img_{index}.jpg", quality=92)
        Image.fromarray(retouched).save(folder / "retouch" / f"img_{index}.jpg", quality=92)


def _patches_per_second(dataset, workers: int, convert: bool) -> tuple[float, int]:
    """Patches/s out of the training loader (``patch_loader``: grouped order, batches laid out per worker;
    uint8 patches, what goes to the device), and with ``convert`` also made 0..1 floats in this process
    (``to_model`` on the CPU, as CPU training does; on a GPU that conversion runs there instead)."""
    from abpn_retouch.data import patch_loader, to_model

    loader = patch_loader(dataset, batch_size=1, num_workers=workers, seed=0)
    loader.batch_sampler.set_epoch(0)
    start, count = time.perf_counter(), 0
    for batch in loader:
        if convert:
            to_model(batch)
        count += 1
    return count / (time.perf_counter() - start), count


def abpn_section(images: int = 2, height: int = 4000, width: int = 6000, patch: int = 2048, stride: int = 1536,
                 repeats: int = 2) -> str:
    import tempfile
    from pathlib import Path

    from abpn_retouch.data import PatchDataset, file_sources

    # (workers, convert): the loader's output with 0 and 2 workers, and with 2 workers plus the float
    # conversion in the main process (with 0 workers it adds the same time to both pipelines).
    setups = [(0, False), (2, False), (2, True)]
    pipelines = [(workers, convert, label, cache) for workers, convert in setups
                 for label, cache in (("decode once per image (ours)", 2), ("decode per patch", 0))]
    rates: dict[tuple[int, bool, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="abpn_jpegs_") as tmp:
        folder = Path(tmp)
        _large_jpegs(folder, images, height, width)
        sources = file_sources(folder / "original", folder / "retouch")
        # Rounds interleave the pipelines and the best round counts: other load on the machine only ever
        # slows a run down, and it would otherwise land on whichever pipeline happened to run then.
        for _ in range(repeats):
            for workers, convert, _label, cache in pipelines:
                dataset = PatchDataset(sources, patch, stride, cache_images=cache)
                rate, count = _patches_per_second(dataset, workers, convert)
                key = (workers, convert, cache)
                rates[key] = max(rate, rates.get(key, 0.0))
    ratios = {(w, c): rates[(w, c, 2)] / rates[(w, c, 0)] for w, c in setups}
    what = {False: "loader output (uint8)", True: "+ float conversion on the CPU"}
    return "\n".join([
        f"{images} JPEG pairs of {width}×{height} (made by the benchmark), {patch} px patches, stride {stride}: "
        f"{count} patches per epoch, each with its GT mask; batch size 1 through the training loader "
        f"(`patch_loader`), which yields uint8 patches for the device; best of {repeats} interleaved rounds.", "",
        "| pipeline | workers | measured at | patches/s |", "| --- | --- | --- | --- |",
        *[f"| {label} | {workers} | {what[convert]} | {rates[(workers, convert, cache)]:.2f} |"
          for workers, convert, label, cache in pipelines], "",
        "| ratio | measured | target | met |", "| --- | --- | --- | --- |",
        *[f"| ours ÷ decode per patch, {w} workers, {what[c]} | {r:.2f}× | ≥ 3× | {'yes' if r >= 3 else 'no'} |"
          for (w, c), r in ratios.items()],
    ])
