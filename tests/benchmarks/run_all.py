"""Run the CPU benchmarks and rewrite the tables in docs/benchmarks.md.

    uv run --all-packages --all-extras --group benchmark python -m tests.benchmarks.run_all [--quick] [--repeats N]

Every ratio is measured in this one run on this machine: a median of repetitions after a warm-up,
and peak memory from a fresh subprocess per method. ``--quick`` uses smaller inputs to check the
harness in seconds (its figures are not the documented ones).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch

from tests.benchmarks import bench_data, bench_inference, bench_tiling, bench_training
from tests.benchmarks.common import ROOT, machine, replace_section, run_isolated_echo

DOC = ROOT / "docs" / "benchmarks.md"
TRAIN_STEPS = 3
STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def tiling_runs(size: int, repeats: int) -> dict[str, dict]:
    progress(f"tiling: {', '.join(bench_tiling.METHODS)}")
    return run_isolated_echo("tests.benchmarks.bench_tiling", "all", str(size), str(repeats))


def tiling_section(runs: dict[str, dict], size: int, repeats: int, seam_size: int) -> str:
    times = {m: r["seconds"] for m, r in runs.items()}
    memory = {m: r["peak_mb"] for m, r in runs.items()}
    # Seams are a local property of tile borders: checked on a smaller image to keep the run short.
    model, image = bench_tiling.build(seam_size)
    with torch.inference_mode():
        full = model(image)
    seams = {mode: bench_tiling.psnr(bench_tiling.tiled_forward(model, image, bench_tiling.TILE, bench_tiling.OVERLAP,
                                                                 mode=mode), full)
             for mode in ("linear", "gaussian")}
    floor = bench_tiling.overlap_area_ratio(size)
    rows = [
        ("ours ÷ spec loop (time)", times["ours"] / times["spec_loop"], 0.8, "≤ 0.80"),
        ("ours ÷ MONAI gaussian (time)", times["ours"] / times["monai_gaussian"], 1.0, "≤ 1.00"),
        ("ours ÷ MONAI constant (time)", times["ours"] / times["monai_constant"], 1.0, "≤ 1.00"),
        ("ours ÷ MONAI gaussian (peak memory)", memory["ours"] / memory["monai_gaussian"], 1.0, "≤ 1.00"),
        ("ours ÷ MONAI constant (peak memory)", memory["ours"] / memory["monai_constant"], 1.0, "≤ 1.00"),
        ("ours ÷ full-image forward (time)", times["ours"] / times["full"], 1.1 * floor,
         f"≤ {1.1 * floor:.2f} (1.1 × tiled-area ratio {floor:.3f})"),
        ("ours, contiguous ÷ spec loop (time)", times["ours_contiguous"] / times["spec_loop"], 0.8, "≤ 0.80"),
    ]
    lines = [f"Deblur U-Net (base 32), {size}×{size} RGB, tile 512, overlap 64, batch 4, fp32; each method in its "
             f"own forked process, median of {repeats} after a warm-up; memory = the process's peak RSS (same model and input in every process). "
             "`ours` is `tiled_forward` with channels_last (the package default on CPU); `ours_contiguous` without.",
             "", "| ratio | measured | target | met |", "| --- | --- | --- | --- |"]
    for name, value, limit, target in rows:
        lines.append(f"| {name} | {value:.3f} | {target} | {'yes' if value <= limit else 'no'} |")
    lines += ["", "| method | time (s) | peak RSS (MiB) |", "| --- | --- | --- |"]
    lines += [f"| {m} | {times[m]:.2f} | {memory[m]:.0f} |" for m in bench_tiling.METHODS]
    lines += ["", f"| seam check ({seam_size}×{seam_size}): PSNR tiled vs. full image | measured | target |",
              "| --- | --- | --- |"]
    lines += [f"| {mode} | {value:.1f} dB | > 40 dB |" for mode, value in seams.items()]
    return "\n".join(lines)


def training_section(quick: bool) -> str:
    progress("training: 5 packages × 4 configurations")
    runs = run_isolated_echo("tests.benchmarks.bench_training", str(TRAIN_STEPS), *(("--quick",) if quick else ()))
    lines = [
        "Training steps per second on CPU, one package at a time, at a small reference size (below). One step "
        "is what the package's trainer does per batch: forward, its losses, backward, gradient clipping and "
        "optimizer step through `shared.amp.MixedPrecision`; for the GANs the discriminator step and then the "
        "generator step. Package step functions are called where they exist (NeuroPBR, AlphaGAN, GANsformer); "
        "deblur_unet and abpn_retouch step inline in their loops, so the benchmark repeats that loop body with "
        "the package's model, losses, optimizer and AMP. `bf16` is `torch.autocast` to bfloat16 on CPU; "
        "`channels_last` converts the models and 4-D batch tensors. Each configuration runs in its own forked "
        f"process: {bench_training.WARMUP} warm-up step(s), then the median of {TRAIN_STEPS} timed steps; "
        "`× fp32` is steps/s over the same package's fp32 steps/s, and peak RSS is the process's, imports "
        "included. Batches are built once and reused, so data loading is not timed. With 2 cores, any other "
        "busy process can slow a step several-fold (OpenMP threads wait on each other): a ratio far out of "
        "line with the rest is worth a rerun on a quiet machine.",
        "", "| package | reference size | configuration | steps/s | × fp32 | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for package, results in runs.items():
        base = results["fp32"]["steps_per_s"]
        for config, r in results.items():
            label = f"{config} (trainer default)" if config == bench_training.DEFAULT_CONFIG[package] else config
            lines.append(f"| {package} | {bench_training.describe(package, quick)} | {label} | "
                         f"{r['steps_per_s']:.2f} | {r['steps_per_s'] / base:.2f} | {r['peak_mb']:.0f} |")
    fastest = [f"{package}: {max(results, key=lambda c: results[c]['steps_per_s'])}" for package, results in runs.items()]
    lines += ["", "Fastest configuration in this run — " + "; ".join(fastest) + "."]
    return "\n".join(lines)


def inference_section(quick: bool, deblur: dict, deblur_size: int) -> str:
    if quick:
        items = ["abpn_retouch:1024x1536", "neuropbr:64", "neuropbr:128", "alphagan_matting:128",
                 "gansformer_inpaint:64@3"]
    else:
        # 256² costs seconds and gives the second point the 2048² memory estimate needs.
        items = ["abpn_retouch", "neuropbr:256", "neuropbr:1024", "alphagan_matting@3", "gansformer_inpaint@3"]
    progress(f"inference: {', '.join(items)}")
    runs = run_isolated_echo("tests.benchmarks.bench_inference", *items)
    lines = [
        "Full-resolution inference on CPU through the function each package's inference CLI calls, with "
        "its shipped defaults (fp32; tiling where the package tiles) and freshly initialised weights (time "
        "and memory do not depend on their values). Each item runs in its own forked process: a warm-up on "
        "a small crop, then one timed run (the median of 3 for AlphaGAN and GANsformer); peak RSS is the "
        "process's, imports and model included. deblur_unet is `ours` from the tiling section (the same "
        "`tiled_forward` call, channels_last, that `deblur_unet.inference` makes). ABPN: `infer.retouch`, "
        "1024 tiles, overlap 256, one tile per forward. NeuroPBR: `inference.predict` (what `run_inference.py` "
        "calls, resize mode) with the default teacher (ResNet-50 at stride 1, ViT 2048 × 4, 266 M parameters) "
        "trained at the views' size; 256² is there as the second point of the memory estimate below. "
        "AlphaGAN: `infer.predict_alpha`, 512 tiles. GANsformer: "
        "`inference.inpaint`, resize mode at the model's 256².",
        "", "| package | input | time (s) | peak RSS (MiB) |", "| --- | --- | --- | --- |",
        f"| deblur_unet | {deblur_size}×{deblur_size} photo, 512 tiles, overlap 64, batch 4 | "
        f"{deblur['seconds']:.2f} | {deblur['peak_mb']:.0f} |",
    ]
    for item, r in runs.items():
        lines.append(f"| {bench_inference.parse(item)[0]} | {r['what']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |")
    measured = {int(bench_inference.parse(i)[1]): r for i, r in runs.items() if i.startswith("neuropbr")}
    lines += ["", neuropbr_2048(measured)]
    return "\n".join(lines)


def neuropbr_2048(measured: dict[int, dict]) -> str:
    """Why NeuroPBR at 2048² is not run: its time from the FLOP count, its memory from the measured growth."""
    low, high = sorted(measured)[0], sorted(measured)[-1]
    rate = bench_inference.neuropbr_tflop(high) / measured[high]["seconds"]
    tflop = bench_inference.neuropbr_tflop(2048)
    # Activations grow with the pixel count: fit peak = base + k · side² through the two measured sizes.
    per_pixel = (measured[high]["peak_mb"] - measured[low]["peak_mb"]) / (high**2 - low**2)
    peak_gib = (measured[high]["peak_mb"] + per_pixel * (2048**2 - high**2)) / 1024
    total_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (f"NeuroPBR at 2048² is not run. The teacher's forward is {tflop:.0f} TFLOP there "
            f"({tflop / bench_inference.neuropbr_tflop(high):.1f}× {high}²); at the {rate * 1000:.0f} GFLOP/s "
            f"measured at {high}² that is about {tflop / rate / 60:.0f} min, a lower bound since attention over "
            f"4× the tokens runs slower per FLOP. Peak memory, extrapolated from {low}² and {high}² "
            f"(activations grow with the pixel count), would be about {peak_gib:.0f} GiB, against this "
            f"machine's {total_gib:.1f} GiB.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs, to check the harness")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per tiling method (after a warm-up)")
    args = parser.parse_args()
    size, repeats, seam_size = (640, 1, 640) if args.quick else (2048, args.repeats, 768)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = f"Machine: {machine()}. Run: {stamp}{' (--quick: not the documented figures)' if args.quick else ''}."
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    text = replace_section(text, "machine", header)
    progress("deblur data pipeline")
    text = replace_section(text, "deblur-data", bench_data.deblur_section(batches=4 if args.quick else 10))
    progress("abpn data pipeline")
    abpn = dict(images=1, height=2000, width=3000, patch=1024, stride=768) if args.quick else {}
    text = replace_section(text, "abpn-data", bench_data.abpn_section(**abpn))
    runs = tiling_runs(size, repeats)
    progress("tiling seam check")
    text = replace_section(text, "tiling", tiling_section(runs, size, repeats, seam_size))
    text = replace_section(text, "training", training_section(args.quick))
    text = replace_section(text, "inference", inference_section(args.quick, runs["ours"], size))
    progress("done")
    if args.quick:
        print(text)
    else:
        DOC.write_text(text)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
