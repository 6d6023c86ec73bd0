"""Run the CPU benchmarks and rewrite the tables in docs/benchmarks.md.

    uv run --all-packages --all-extras --group benchmark python -m tests.benchmarks.run_all [--quick] [--repeats N]

Every ratio is measured in this one run on this machine: a median of repetitions after a warm-up,
and peak memory from a fresh subprocess per method. ``--quick`` uses smaller inputs to check the
harness in seconds (its figures are not the documented ones).
"""

from __future__ import annotations

import argparse
import datetime
import re

import torch

from tests.benchmarks import bench_data, bench_tiling
from tests.benchmarks.common import ROOT, machine, run_isolated

DOC = ROOT / "docs" / "benchmarks.md"


def tiling_section(size: int, repeats: int, seam_size: int) -> str:
    runs = {m: run_isolated("tests.benchmarks.bench_tiling", m, str(size), str(repeats)) for m in bench_tiling.METHODS}
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
             f"own process, median of {repeats} after a warm-up; memory = the process's peak RSS (same model and input in every process). "
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


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    return text.rstrip() + "\n\n" + block + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs, to check the harness")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per tiling method (after a warm-up)")
    args = parser.parse_args()
    size, repeats, seam_size = (640, 1, 640) if args.quick else (2048, args.repeats, 1024)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = f"Machine: {machine()}. Run: {stamp}{' (--quick: not the documented figures)' if args.quick else ''}."
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    text = replace_section(text, "machine", header)
    text = replace_section(text, "deblur-data", bench_data.deblur_section(batches=4 if args.quick else 10))
    abpn = dict(images=1, height=2000, width=3000, patch=1024, stride=768) if args.quick else {}
    text = replace_section(text, "abpn-data", bench_data.abpn_section(**abpn))
    text = replace_section(text, "tiling", tiling_section(size, repeats, seam_size))
    if args.quick:
        print(text)
    else:
        DOC.write_text(text)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
