"""How the tile size changes a GroupNorm U-Net's output, and what whole-image statistics buy back.

The deblur U-Net normalises every tile with that tile's GroupNorm statistics, so a tiled output depends
on the tile size. For each trained checkpoint, each evaluation frame (blur/ and sharp/ pairs) and each
tile size (overlap = tile / 8, linear feathering), with ``norm_stats`` = ``tile`` (the plain tiled
forward), ``image`` (exact whole-image statistics) and ``downscaled`` (statistics from one pass over a
copy whose longer side is ``--norm-size``), this measures:

* ``diff_255`` / ``psnr_vs_untiled``: mean |output − untiled output| in 0..255 steps, and the PSNR
  between the two (outputs clipped to 0..1, as saved);
* ``step_1`` / ``step_8``: tone steps at tile borders. For every interior tile edge (a tile's first or
  last column/row that is not on the image border), the |difference| between the mean of the ``k``
  columns just inside and the ``k`` just outside (per channel, over the whole image height — rows
  likewise), in 0..255, averaged over edges and channels; the untiled output's value at the same lines
  is subtracted, so 0 means no step beyond the image's own;
* ``psnr`` / ``ssim`` against the sharp frame (``shared.metrics``); ``seconds``: wall time of the call.

``uv run --frozen --all-packages --all-extras --group benchmark python -m tests.benchmarks.bench_tile_norm
--out DIR`` writes ``DIR/tile_norm.json`` and ``DIR/tile_norm.md``; results are written after every
frame, so a long run can be read while it goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

DEFAULT_FRAMES = Path("/tmp/learning/final/splits/deblur/eval")
DEFAULT_CHECKPOINTS = ("/tmp/dexp/deblur10/run/checkpoints/latest.pth", "/tmp/dep/b32/checkpoints/latest.pth")
TILES = (128, 256, 512, 1024)
MODES = ("tile", "image", "downscaled")


def to_unit(out: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] to the saved image's 0..1, clipped and quantised to 8 bits as a PNG would be."""
    return torch.round(((out.float() + 1) / 2).clamp(0, 1) * 255) / 255


def psnr_between(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def interior_edges(length: int, tile: int, overlap: int) -> list[int]:
    """Pixel indices where a tile starts (first pixel inside) or ends (first pixel past it), inside the image."""
    from shared.tiling import tile_positions

    starts = sorted({top for top, _ in tile_positions(max(length, tile), tile, tile, overlap)})
    edges = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < length}
    return sorted(edges)


def tone_step(img: torch.Tensor, edges_x: list[int], edges_y: list[int], k: int) -> float:
    """Mean |mean of k columns (rows) after an edge − mean of k before it|, in 0..255; NaN without edges."""
    steps = []
    cols = img.mean(dim=-2)[0]  # (C, W) column means
    rows = img.mean(dim=-1)[0]  # (C, H)
    for means, edges in ((cols, edges_x), (rows, edges_y)):
        for e in edges:
            if e - k < 0 or e + k > means.shape[-1]:
                continue
            steps.append((means[:, e : e + k].mean(-1) - means[:, e - k : e].mean(-1)).abs().mean().item())
    return 255 * sum(steps) / len(steps) if steps else float("nan")


def evaluate(model, blur: torch.Tensor, sharp: torch.Tensor, tiles, modes, norm_size: int, batch_size: int,
             log, image_tiles=None) -> list[dict]:
    from shared.metrics import psnr, ssim
    from shared.tiling import tiled_forward

    model = model.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode():
        untiled = model(blur.contiguous(memory_format=torch.channels_last))
    untiled_seconds = time.perf_counter() - start
    ref = to_unit(untiled)
    height, width = blur.shape[-2:]
    rows = [{"tile": "untiled", "norm_stats": "-", "overlap": 0, "diff_255": 0.0, "psnr_vs_untiled": math.inf,
             "step_1": 0.0, "step_8": 0.0, "psnr": psnr(ref, sharp).item(), "ssim": ssim(ref, sharp).item(),
             "seconds": untiled_seconds}]
    log(f"    untiled: {rows[0]['psnr']:.3f} dB, {untiled_seconds:.1f} s")
    for tile in tiles:
        overlap = tile // 8
        edges_x, edges_y = interior_edges(width, tile, overlap), interior_edges(height, tile, overlap)
        for mode in modes:
            if mode == "image" and image_tiles is not None and tile not in image_tiles:
                continue
            start = time.perf_counter()
            out = tiled_forward(model, blur, tile_size=tile, overlap=overlap, batch_size=batch_size,
                                channels_last=True, norm_stats=mode, norm_size=norm_size)
            seconds = time.perf_counter() - start
            img = to_unit(out)
            row = {"tile": tile, "norm_stats": mode, "overlap": overlap,
                   "diff_255": 255 * (img - ref).abs().mean().item(), "psnr_vs_untiled": psnr_between(img, ref)}
            for k in (1, 8):
                row[f"step_{k}"] = tone_step(img, edges_x, edges_y, k) - tone_step(ref, edges_x, edges_y, k)
            row.update(psnr=psnr(img, sharp).item(), ssim=ssim(img, sharp).item(), seconds=seconds)
            rows.append(row)
            log(f"    tile {tile} {mode}: |Δ| {row['diff_255']:.3f}/255, step {row['step_1']:+.3f}, "
                f"{row['psnr']:.3f} dB, {seconds:.1f} s")
    return rows


def summarise(results: list[dict]) -> list[dict]:
    """Mean over frames per (checkpoint, tile, norm_stats)."""
    groups: dict[tuple, list[dict]] = {}
    for frame in results:
        for row in frame["rows"]:
            groups.setdefault((frame["checkpoint"], str(row["tile"]), row["norm_stats"]), []).append(
                {**row, "input_psnr": frame["input_psnr"]})
    summary = []
    for (checkpoint, tile, mode), rows in groups.items():
        mean = {key: sum(r[key] for r in rows) / len(rows)
                for key in ("diff_255", "psnr_vs_untiled", "step_1", "step_8", "psnr", "ssim", "seconds", "input_psnr")}
        summary.append({"checkpoint": checkpoint, "tile": tile, "norm_stats": mode, "frames": len(rows), **mean,
                        "gain_db": mean["psnr"] - mean["input_psnr"]})
    return summary


def markdown(summary: list[dict]) -> str:
    lines = ["| checkpoint | tile / overlap | norm_stats | frames | mean abs diff to untiled (/255) | PSNR vs untiled (dB) "
             "| tone step, 1 col (/255) | tone step, 8 cols (/255) | PSNR vs sharp (gain over input) | SSIM | s / frame |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary:
        tile = r["tile"] if r["tile"] == "untiled" else f"{r['tile']} / {int(r['tile']) // 8}"
        vs = "∞" if math.isinf(r["psnr_vs_untiled"]) else f"{r['psnr_vs_untiled']:.2f}"
        # A single tile has no interior edge, hence no step to measure.
        step_1, step_8 = ("–" if math.isnan(r[k]) else f"{r[k]:+.3f}" for k in ("step_1", "step_8"))
        lines.append(f"| {r['checkpoint']} | {tile} | {r['norm_stats']} | {r['frames']} | {r['diff_255']:.3f} | {vs} "
                     f"| {step_1} | {step_8} | {r['psnr']:.3f} ({r['gain_db']:+.3f}) "
                     f"| {r['ssim']:.4f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for tile_norm.json and tile_norm.md")
    parser.add_argument("--frames", default=str(DEFAULT_FRAMES), help="folder with blur/ and sharp/ pairs")
    parser.add_argument("--checkpoint", action="append", default=None,
                        help=f"deblur checkpoint (repeatable; default: those of {DEFAULT_CHECKPOINTS} that exist)")
    parser.add_argument("--tiles", type=int, nargs="+", default=list(TILES), help="tile sizes (overlap = tile/8)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="norm_stats values")
    parser.add_argument("--image-tiles", type=int, nargs="*", default=None,
                        help="tile sizes at which the (slow) 'image' mode runs (default: all of --tiles)")
    parser.add_argument("--max-frames", type=int, default=0, help="only the first N frames (0 = all)")
    parser.add_argument("--norm-size", type=int, default=512, help="longer side of the 'downscaled' copy")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)

    from deblur_unet.data import to_model_range
    from deblur_unet.inference import load_model
    from shared.images import pair_by_stem, read_image
    from shared.metrics import psnr

    if args.threads:
        torch.set_num_threads(args.threads)
    frames = Path(args.frames)
    pairs = pair_by_stem(frames / "blur", frames / "sharp")[: args.max_frames or None]
    checkpoints = args.checkpoint or [c for c in DEFAULT_CHECKPOINTS if Path(c).is_file()]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    def log(line: str) -> None:
        print(line, flush=True)

    for checkpoint in checkpoints:
        model = load_model(checkpoint, "cpu")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        name = f"{Path(checkpoint).parent.parent.name}/{Path(checkpoint).name} (base {model.base_ch}, " \
               f"patch {state.get('config', {}).get('patch_size')}, step {state.get('global_step')})"
        log(f"{name}")
        for blur_path, sharp_path in pairs:
            blur = to_model_range(read_image(blur_path)).unsqueeze(0)
            sharp = to_unit(to_model_range(read_image(sharp_path)).unsqueeze(0))
            log(f"  {Path(blur_path).name} {tuple(blur.shape[-2:])}")
            rows = evaluate(model, blur, sharp, args.tiles, args.modes, args.norm_size, args.batch_size, log,
                            args.image_tiles)
            results.append({"checkpoint": name, "frame": Path(blur_path).name,
                            "input_psnr": psnr(to_unit(blur), sharp).item(), "rows": rows})
            summary = summarise(results)
            (out_dir / "tile_norm.json").write_text(json.dumps(
                {"threads": torch.get_num_threads(), "norm_size": args.norm_size, "batch_size": args.batch_size,
                 "frames": results, "summary": summary}, indent=1))
            (out_dir / "tile_norm.md").write_text(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
