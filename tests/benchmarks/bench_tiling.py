"""Tiled inference of the deblur U-Net on a 2048×2048 image on CPU: ours vs. the alternatives.

Methods (tile 512, overlap 64, fp32):
* ``ours``: ``shared.tiling.tiled_forward`` (batched tiles, preallocated accumulators, cached weights).
* ``spec_loop``: the original project's approach — a Python loop over tiles one at a time, each output
  stitched with linear feathering.
* ``monai_gaussian`` / ``monai_constant``: MONAI ``sliding_window_inference`` with the same geometry.
* ``full``: one untiled forward of the whole image (the floor tiling cannot beat).

``python -m tests.benchmarks.bench_tiling METHOD SIZE REPEATS`` runs one method (warm-up on a small
crop, then REPEATS timed runs) and prints the median time and the process's peak resident memory;
``all`` instead of METHOD imports everything once and runs each method in its own forked child, so no
method's allocations count against another and the imports are paid once.
"""

from __future__ import annotations

import json
import math
import sys

import torch

from shared.tiling import create_blend_weight, tile_positions, tile_tensor, tiled_forward

TILE, OVERLAP, BATCH = 512, 64, 4
METHODS = ("ours", "ours_contiguous", "spec_loop", "monai_gaussian", "monai_constant", "full")


def build(size: int):
    from deblur_unet.model import DeblurUNet

    torch.manual_seed(0)
    model = DeblurUNet(base_ch=32).eval()
    # In place: a temporary here would raise the baseline peak and hide the methods' own allocations.
    image = torch.empty(1, 3, size, size).uniform_(-1, 1)
    return model, image


def spec_loop(model, image):
    """One tile at a time, feathered, as the original project did."""
    tiles, positions = tile_tensor(image, TILE, OVERLAP)
    _, _, height, width = image.shape
    out = torch.zeros(1, 3, max(height, TILE), max(width, TILE))
    weight_sum = torch.zeros(1, 1, max(height, TILE), max(width, TILE))
    weight = create_blend_weight(TILE, OVERLAP, "linear")
    with torch.no_grad():
        for tile, (top, left) in zip(tiles, positions, strict=True):
            pred = model(tile.unsqueeze(0))
            out[..., top : top + TILE, left : left + TILE] += pred * weight
            weight_sum[..., top : top + TILE, left : left + TILE] += weight
    return (out / weight_sum)[..., :height, :width]


def run(method: str, model, image):
    if method.startswith("ours"):
        channels_last = method == "ours"
        model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return tiled_forward(model, image, TILE, OVERLAP, batch_size=BATCH, mode="linear", channels_last=channels_last)
    if method == "spec_loop":
        return spec_loop(model, image)
    if method.startswith("monai"):
        from monai.inferers import sliding_window_inference

        with torch.inference_mode():
            return sliding_window_inference(image, (TILE, TILE), BATCH, model, overlap=OVERLAP / TILE,
                                            mode=method.split("_")[1])
    with torch.inference_mode():
        return model(image)


def overlap_area_ratio(size: int) -> float:
    return len(tile_positions(size, size, TILE, OVERLAP)) * TILE * TILE / (size * size)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 2.0) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def measure(method: str, size: int, repeats: int) -> dict:
    from tests.benchmarks.common import median_seconds, peak_rss_mb

    model, image = build(size)
    run(method, model, image[..., :64, :64])  # load kernels
    seconds = median_seconds(lambda: run(method, model, image), repeats, warmup=0)
    # Absolute peak: every process holds the same model and input, so differences are the method's own;
    # a difference against a mid-run baseline proved fragile (allocator reuse made it read 0).
    return {"method": method, "seconds": seconds, "peak_mb": peak_rss_mb()}


def main() -> None:
    """``METHOD SIZE REPEATS`` (one method), or ``all SIZE REPEATS``: import once, fork one child per method."""
    import importlib

    from tests.benchmarks.common import run_forked

    method, size, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if method != "all":
        print(json.dumps(measure(method, size, repeats)))
        return
    # Imports only (MONAI's takes about 20 s): no computation yet, so no OpenMP pool to break in a fork.
    for module in ("deblur_unet.model", "monai.inferers"):
        importlib.import_module(module)
    results = {}
    for name in METHODS:
        results[name] = run_forked(measure, name, size, repeats)
        print(f"  tiling {name}: {results[name]['seconds']:.2f} s, {results[name]['peak_mb']:.0f} MiB",
              file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
