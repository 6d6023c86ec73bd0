"""Patch throughput of :class:`PatchDataset`: decode once per image (cached, grouped) vs once per patch.

``uv run --package abpn_retouch python -m abpn_retouch.bench --images 2 --width 6000 --height 4000``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader

from abpn_retouch.data import GroupedPatchSampler, PatchDataset, file_sources, synthetic_portrait


def measure(folder: Path, patch: int, stride: int, cache: int, workers: int) -> tuple[float, int]:
    dataset = PatchDataset(file_sources(folder / "original", folder / "retouch"), patch, stride, cache_images=cache)
    sampler = GroupedPatchSampler(dataset.groups, seed=0)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers)
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--patch-size", type=int, default=2048)
    parser.add_argument("--stride", type=int, default=1536)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for sub in ("original", "retouch"):
            (folder / sub).mkdir()
        for i in range(args.images):
            src, dst = synthetic_portrait(i, args.height, args.width)
            Image.fromarray(src).save(folder / "original" / f"{i}.jpg", quality=95)
            Image.fromarray(dst).save(folder / "retouch" / f"{i}.jpg", quality=95)
        for label, cache in (("decode per patch", 0), ("decode per image (cached, grouped)", 2)):
            rate, count = measure(folder, args.patch_size, args.stride, cache, args.workers)
            print(f"{label:36s} {count} patches  {rate:.2f} patches/s")


if __name__ == "__main__":
    main()
