"""CPU timing of DeblurUNet: one ``patch``×``patch`` forward and one tiled ``image``×``image`` image.

The spec quotes 100-200 ms per 256×256 patch and 2-5 s per 2048×2048 image on a CPU host; this
measures the same two things on the machine at hand so the README can put them side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from deblur_unet.inference import TilingOptions, deblur_tensor, load_model
from deblur_unet.model import DeblurUNet, count_parameters
from shared.errors import cli_entry


def _time(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_benchmark(model: torch.nn.Module, image_size: int = 2048, patch_size: int = 256,
                  options: TilingOptions | None = None, repeats: int = 5, image_repeats: int = 1,
                  warmup: int = 1) -> dict:
    """Median/min seconds for a single patch forward and for a tiled full image, on CPU, fp32."""
    options = options or TilingOptions()
    model = model.cpu().eval()
    patch = torch.rand(1, 3, patch_size, patch_size) * 2 - 1
    image = torch.rand(1, 3, image_size, image_size) * 2 - 1

    def forward_patch():
        with torch.inference_mode():
            model(patch)

    patch_times = _time(forward_patch, repeats, warmup)
    image_times = _time(lambda: deblur_tensor(model, image, options), image_repeats, 0)
    return {
        "patch": {"size": patch_size, "median_s": statistics.median(patch_times), "min_s": min(patch_times),
                  "runs": len(patch_times)},
        "image": {"size": image_size, "median_s": statistics.median(image_times), "min_s": min(image_times),
                  "runs": len(image_times), "tile_size": options.tile_size, "overlap": options.overlap,
                  "batch_size": options.batch_size, "blend": options.blend},
        "parameters": count_parameters(model),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deblur-benchmark", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Time DeblurUNet on CPU: one patch and one tiled large image.")
    parser.add_argument("--checkpoint", default=None, help="weights to time (default: random init, same cost)")
    parser.add_argument("--base-ch", type=int, default=32, help="model width when no checkpoint is given")
    parser.add_argument("--image-size", type=int, default=2048, help="side of the tiled test image")
    parser.add_argument("--patch-size", type=int, default=256, help="side of the single-patch test")
    parser.add_argument("--tile-size", type=int, default=512, help="tile side for the large image")
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--repeats", type=int, default=5, help="timed patch runs (after one warm-up)")
    parser.add_argument("--image-repeats", type=int, default=1, help="timed large-image runs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        model = load_model(args.checkpoint, "cpu")
    else:
        torch.manual_seed(0)
        model = DeblurUNet(base_ch=args.base_ch)
    options = TilingOptions(args.tile_size, args.overlap, args.batch_size)
    options.validate()
    results = run_benchmark(model, args.image_size, args.patch_size, options, args.repeats, args.image_repeats)
    p, i = results["patch"], results["image"]
    print(f"DeblurUNet {results['parameters'] / 1e6:.2f}M params, torch {results['torch']}, "
          f"{results['threads']} threads, {results['cpu_count']} CPUs")
    print(f"{p['size']}×{p['size']} patch:  median {p['median_s'] * 1000:.0f} ms  (min {p['min_s'] * 1000:.0f} ms, "
          f"{p['runs']} runs)   spec: 100-200 ms")
    print(f"{i['size']}×{i['size']} image (tiles {i['tile_size']}/{i['overlap']}, batch {i['batch_size']}):  "
          f"median {i['median_s']:.2f} s  (min {i['min_s']:.2f} s, {i['runs']} runs)   spec: 2-5 s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
