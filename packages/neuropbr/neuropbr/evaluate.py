"""Evaluate PBR maps: per-map PSNR / SSIM / MAE and normal-angle statistics → JSON + printed table.

Two sources of predictions:

* ``--pred-dir P --gt-dir G``: folders of material folders, each with the four map PNGs; materials are
  paired by folder name (maps of another size are resized to the ground truth's).
* ``--checkpoint C``: run a trained teacher over its dataset (``--split val`` as in training, or ``all``),
  optionally on another dataset (``--input-dir/--output-dir``) or ``--synthetic``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from neuropbr.data import build_dataset
from neuropbr.inference import load_generator
from neuropbr.maps import MAP_NAMES, resize_maps, tensor_to_maps
from neuropbr.utils.dataset import MAP_FILES, load_material, train_val_split
from neuropbr.utils.metrics import ANGLE_THRESHOLDS, MetricAccumulator
from shared.cli import format_table, write_json
from shared.device import resolve_device
from shared.errors import DataError, cli_entry


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate predicted PBR maps (PSNR/SSIM/MAE, normal angles).")
    p.add_argument("--pred-dir", help="folder of predicted material folders")
    p.add_argument("--gt-dir", help="folder of ground-truth material folders")
    p.add_argument("--checkpoint", help="evaluate a trained teacher on its dataset instead")
    p.add_argument("--input-dir", help="dataset input/ folder (default: the checkpoint's)")
    p.add_argument("--output-dir", help="dataset output/ folder (default: the checkpoint's)")
    p.add_argument("--synthetic", action="store_true", help="evaluate on the synthetic dataset")
    p.add_argument("--split", choices=["val", "all"], default="val")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--out", default="metrics.json", help="metrics JSON path")
    return p


def _material_dirs(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and (p / MAP_FILES["albedo"]).exists()}
    if not found:
        raise DataError(f"{folder}: no material folders with {', '.join(MAP_FILES.values())}")
    return found


def evaluate_folders(pred_dir: Path, gt_dir: Path) -> dict[str, float]:
    preds, gts = _material_dirs(pred_dir), _material_dirs(gt_dir)
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise DataError(f"{pred_dir}: no prediction for {len(missing)} material(s): {', '.join(missing[:5])}")
    acc = MetricAccumulator()
    for name, gt_folder in gts.items():
        gt = load_material(gt_folder)
        pred = load_material(preds[name], tuple(gt["albedo"].shape[-2:]))
        acc.update({k: v[None] for k, v in pred.items()}, {k: v[None] for k, v in gt.items()})
    return acc.compute() | {"count": float(len(gts))}


@torch.no_grad()
def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    device = resolve_device(args.device)
    model, cfg = load_generator(args.checkpoint, device)
    if args.synthetic:
        cfg.data.synthetic = True
    if args.input_dir:
        cfg.data.input_dir, cfg.data.metadata_path, cfg.data.synthetic = args.input_dir, None, False
    if args.output_dir:
        cfg.data.output_dir = args.output_dir
    dataset = build_dataset(cfg)
    indices = list(range(len(dataset)))
    if args.split == "val":
        _, indices = train_val_split(dataset.group_keys, cfg.data.val_ratio, cfg.training.seed)
        if not indices:
            raise DataError("the validation split is empty for this dataset; use --split all")
    acc = MetricAccumulator()
    for inputs, targets in DataLoader(Subset(dataset, indices), batch_size=args.batch_size):
        pred = model(inputs.to(device))
        target = tensor_to_maps(targets)
        pred = resize_maps({k: v.float().cpu() for k, v in pred.items()}, tuple(targets.shape[-2:]))
        acc.update(pred, target)
    return acc.compute() | {"count": float(len(indices))}


def metrics_table(metrics: Mapping[str, float]) -> str:
    """The shared table with one row per map (PSNR / SSIM / MAE), then the normal-angle line."""
    rows = {name: {k: metrics[f"{k}_{name}"] for k in ("psnr", "ssim", "mae")}
            for name in MAP_NAMES if f"psnr_{name}" in metrics}
    mean = {k: metrics.get(f"{k}_mean") for k in ("psnr", "ssim", "mae")}
    lines = [format_table(rows, mean, labels={"psnr": "PSNR", "ssim": "SSIM", "mae": "MAE"}, name_header="map",
                          mean_label="mean")]
    if "normal_angle_mean" in metrics:
        within = "  ".join(f"<{t}°: {metrics[f'normal_within_{t}']:.1f}%" for t in ANGLE_THRESHOLDS)
        lines.append(f"normal angle: mean {metrics['normal_angle_mean']:.2f}°  median "
                     f"{metrics['normal_angle_median']:.2f}°  rmse {metrics['normal_angle_rmse']:.2f}°  {within}")
    return "\n".join(lines)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.checkpoint:
        metrics = evaluate_checkpoint(args)
    elif args.pred_dir and args.gt_dir:
        metrics = evaluate_folders(Path(args.pred_dir), Path(args.gt_dir))
    else:
        raise DataError("give --pred-dir and --gt-dir, or --checkpoint")
    out = write_json(args.out, metrics, sort_keys=True)
    print(metrics_table(metrics))
    print(f"({int(metrics['count'])} material(s); metrics written to {out})")
    return 0
