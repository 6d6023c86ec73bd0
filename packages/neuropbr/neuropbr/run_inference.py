"""Preview a trained teacher on a dataset sample or on a folder of three PNG renders."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from neuropbr.data import build_dataset
from neuropbr.inference import load_generator, predict
from neuropbr.maps import MAP_NAMES, maps_for_display
from neuropbr.utils.dataset import conversion_notes, dataset_conversion_notes, load_views
from shared.device import resolve_device
from shared.errors import DataError, cli_entry
from shared.images import list_images, save_image


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict albedo/roughness/metallic/normal maps with a trained teacher.")
    p.add_argument("--checkpoint", required=True, help="generator checkpoint (training or exported)")
    p.add_argument("--sample-idx", type=int, default=0, help="dataset sample index when --input-dir is omitted")
    p.add_argument("--input-dir", help="folder with exactly three PNG renders (sorted alphabetically)")
    p.add_argument("--out-dir", default="inference_outputs", help="where the maps and input views go")
    p.add_argument("--data-input-dir", help="dataset input/ folder (default: the one in the checkpoint's config)")
    p.add_argument("--data-output-dir", help="dataset output/ folder (default: the checkpoint's)")
    p.add_argument("--synthetic", action="store_true", help="take --sample-idx from the synthetic dataset")
    p.add_argument("--tile", action="store_true",
                   help="native resolution through overlapping tiles of the training size (default: resize "
                        "to the training size like the data loader, then back to the input size)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: tile size / 8)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    return p


def write_outputs(out_dir: Path, maps: dict[str, torch.Tensor], views: torch.Tensor,
                  targets: dict[str, torch.Tensor] | None = None) -> list[Path]:
    """``albedo.png roughness.png metallic.png normal.png`` (+ ``input_{0,1,2}.png``, ``gt_*.png``)."""
    written = []
    shown = maps_for_display({k: v[0] for k, v in maps.items()})
    for name in MAP_NAMES:
        written.append(save_image(out_dir / f"{name}.png", shown[name]))
    for i in range(views.shape[0]):
        written.append(save_image(out_dir / f"input_{i}.png", views[i]))
    if targets is not None:
        gt = maps_for_display(targets)
        for name in MAP_NAMES:
            written.append(save_image(out_dir / f"gt_{name}.png", gt[name]))
    return written


def run(args: argparse.Namespace) -> list[Path]:
    device = resolve_device(args.device)
    model, cfg = load_generator(args.checkpoint, device)
    targets = None
    if args.input_dir:
        files = [p for p in list_images(args.input_dir, (".png",))]
        if len(files) != 3:
            raise DataError(f"{args.input_dir}: expected exactly three PNG renders, found {len(files)}"
                            + (f" ({', '.join(p.name for p in files[:6])})" if files else ""))
        notes = conversion_notes({"views": files})
        views = load_views(files)
    else:
        if args.synthetic:
            cfg.data.synthetic = True
        if args.data_input_dir:
            cfg.data.input_dir, cfg.data.metadata_path, cfg.data.synthetic = args.data_input_dir, None, False
        if args.data_output_dir:
            cfg.data.output_dir = args.data_output_dir
        dataset = build_dataset(cfg)
        if not 0 <= args.sample_idx < len(dataset):
            raise DataError(f"--sample-idx {args.sample_idx} is out of range: the dataset has {len(dataset)} samples")
        notes = dataset_conversion_notes(dataset, [args.sample_idx])
        views, targets = dataset.load_raw(args.sample_idx)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    maps = predict(model, views[None], cfg, mode="tile" if args.tile else "resize", tile_overlap=args.overlap,
                   precision=args.precision)
    written = write_outputs(Path(args.out_dir), maps, views, targets)
    h, w = views.shape[-2:]
    print(f"Wrote {', '.join(f'{n}.png' for n in MAP_NAMES)} ({w}×{h}) and the input views to {args.out_dir}")
    return written


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    run(build_arg_parser().parse_args(argv))
    return 0
