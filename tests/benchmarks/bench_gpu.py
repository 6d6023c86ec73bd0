"""GPU benchmarks (issue 9, part 4): one prepared script for a machine with a CUDA device.

    python -m tests.benchmarks.bench_gpu [--steps N] [--skip-training] [--skip-tiling] [PACKAGE ...]

writes the ``gpu-tiling`` and ``gpu-training-<package>`` sections of docs/benchmarks.md (device name and
date in each) and prints them:

* training steps/s and peak GPU memory at the specs' sizes in fp32, AMP bf16, AMP + channels_last and
  AMP + ``torch.compile`` (``bench_training --device cuda``), with each AMP configuration's speed-up
  over fp32 against the 2× target for the convolutional models, and the largest ABPN 2048² batch;
* tiled inference of the deblur U-Net on a 2048² image (tile 512, overlap 64, batch 4): ``tiled_forward``
  in fp32, bf16 and fp16, contiguous and channels_last, against the spec's per-tile loop and the
  untiled forward, beside the spec's RTX 4070 figure (~99 ms).

No uv on the lent machine (nothing can be fetched there); its own Python has torch, torchvision, OpenCV,
SciPy, PyYAML and tqdm, so the workspace's packages run from the source tree::

    export PYTHONPATH=shared:$(ls -d packages/* | paste -sd:)
    python3 -m tests.benchmarks.bench_gpu deblur_unet abpn_retouch   # tiling, 2 packages' training
    python3 -m tests.benchmarks.bench_gpu --skip-tiling neuropbr alphagan_matting gansformer_inpaint
    cp docs/benchmarks.md $OUT/   # the device tool brings back only what is under $OUT

Each call replaces only the sections it measured. Expect roughly a minute per package and configuration
with ``torch.compile`` (it builds kernels), a few seconds for the others (an estimate: not yet run on a GPU).

On a 2-core CPU machine, ``--device-check`` runs the same code paths on the CPU at tiny sizes.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

import torch

from tests.benchmarks.bench_training import LARGEST_ABPN_BATCH
from tests.benchmarks.common import ROOT, replace_section, run_isolated_echo

DOC = ROOT / "docs" / "benchmarks.md"
SPEC_RTX4070_MS = 99.0  # deblur_unet spec: tiled inference of a 2048² image on an RTX 4070
CONVOLUTIONAL = ("deblur_unet", "abpn_retouch", "alphagan_matting")  # the 2× AMP target applies to these


def _cuda_ms(fn, repeats: int, warmup: int = 2, device: str = "cuda") -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def tiling_rows(size: int, repeats: int, device: str) -> list[tuple[str, float, float]]:
    """(method, median ms, peak device MiB) for the deblur U-Net on a ``size``² image."""
    from shared.tiling import tiled_forward
    from tests.benchmarks import bench_tiling
    from tests.benchmarks.bench_tiling import BATCH, OVERLAP, TILE, build

    model, image = build(size)
    model, image = model.to(device), image.to(device)
    methods = {}
    # fp16 autocast on CPU runs through slow reference kernels (minutes for one 512² tile): GPU only.
    for precision in ("fp32", "bf16", "fp16") if device == "cuda" else ("fp32", "bf16"):
        for channels_last in (False, True):
            def ours(precision=precision, channels_last=channels_last):
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                return tiled_forward(model.to(memory_format=fmt), image, TILE, OVERLAP, batch_size=BATCH,
                                     precision=precision, channels_last=channels_last)
            methods[f"tiled_forward {precision}{' + channels_last' if channels_last else ''}"] = ours

    def spec_loop():
        return bench_tiling.spec_loop(model.to(memory_format=torch.contiguous_format), image)

    def full():
        with torch.inference_mode():
            return model.to(memory_format=torch.contiguous_format)(image)

    methods["spec loop (one tile at a time, fp32)"] = spec_loop
    methods["untiled forward fp32"] = full
    rows = []
    for name, fn in methods.items():
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ms = _cuda_ms(fn, repeats, device=device)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
        rows.append((name, ms, peak))
        print(f"  tiling {name}: {ms:.1f} ms", file=sys.stderr, flush=True)
    return rows


def training_table(results: dict, largest: dict | None = None) -> list[str]:
    lines = ["| package | size × batch | configuration | steps/s | × fp32 | peak GPU memory (MiB) |",
             "| --- | --- | --- | --- | --- | --- |"]
    verdicts = []
    for key, configs in results.items():
        base = configs["fp32"]["steps_per_s"]
        for config, r in configs.items():
            ratio = r["steps_per_s"] / base
            lines.append(f"| {key} | {r['side']}² × {r['batch']} | {config} | {r['steps_per_s']:.2f} | {ratio:.2f} | "
                         f"{r.get('peak_gpu_mb', float('nan')):.0f} |")
        fastest = max(configs, key=lambda c: configs[c]["steps_per_s"])
        amp = configs["AMP bf16"]["steps_per_s"] / base
        target = f"AMP bf16 ÷ fp32 = {amp:.2f}×" + (
            f" (target ≥ 2×: {'met' if amp >= 2 else 'not met'})" if _package(key) in CONVOLUTIONAL else "")
        verdicts.append(f"- {key}: fastest {fastest}; {target}.")
    lines += ["", *verdicts]
    if largest is not None:
        lines.append(f"- ABPN: the largest 2048² training batch that fits (AMP bf16, powers of two) is "
                     f"{largest['batch']}" + (f", at {largest['peak_gpu_mb']:.0f} MiB peak." if largest.get("peak_gpu_mb")
                                               else "."))
    return lines


def _package(key: str) -> str:
    """``neuropbr@512`` → ``neuropbr``: bench_training keys a package's rows by size when it has several."""
    return key.split("@")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", help="training rows for these packages only (default: all)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-tiling", action="store_true")
    parser.add_argument("--device-check", action="store_true",
                        help="no GPU: run the tiling code path on the CPU at 256² (nothing is written)")
    args = parser.parse_intermixed_args()
    if args.device_check:
        rows = tiling_rows(256, 1, "cpu")
        print("\n".join(f"{name}: {ms:.1f} ms" for name, ms, _ in rows))
        return
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device: bench_gpu measures a GPU (see --device-check)")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"Device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}. "
              f"Run: {stamp}.")
    # One section per part, so that the parts can run in separate calls (a lent machine allows 10 minutes
    # a command) without one overwriting another's figures.
    sections = {}
    if not args.skip_tiling:
        tiling = tiling_rows(2048, 10, "cuda")
        sections["gpu-tiling"] = [
            header, "", "Tiled inference, deblur U-Net (base 32), 2048² RGB, tile 512, overlap 64, batch 4: median of "
            f"10 after 2 warm-ups; the spec's figure is ~{SPEC_RTX4070_MS:.0f} ms on an RTX 4070.", "",
            "| method | ms | peak GPU memory (MiB) |", "| --- | --- | --- |",
            *[f"| {m} | {ms:.1f} | {peak:.0f} |" for m, ms, peak in tiling]]
    if not args.skip_training:
        results = run_isolated_echo("tests.benchmarks.bench_training", str(args.steps), "--device", "cuda",
                                    *args.packages)
        largest = results.pop(LARGEST_ABPN_BATCH, None)
        for package in dict.fromkeys(map(_package, results)):
            mine = {k: v for k, v in results.items() if _package(k) == package}
            sections[f"gpu-training-{package}"] = [
                header, "", f"Training steps of {package} at the spec's size: median of {args.steps} steps after "
                "warm-up (3 for torch.compile), each configuration in its own process.", "",
                *training_table(mine, largest if package == "abpn_retouch" else None)]
    text = DOC.read_text()
    for name, lines in sections.items():
        text = replace_section(text, name, "\n".join(lines))
    DOC.write_text(text)
    print(text[text.index("<!-- gpu"):] if "<!-- gpu" in text else "")


if __name__ == "__main__":
    main()
