"""Evaluation: SAD, MSE, Gradient and Connectivity errors of predicted alphas vs GT, as JSON + table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from alphagan_matting.losses.metrics import compute_metrics
from alphagan_matting.utils import TrimapNotes, conversion_notes, read_alpha, read_trimap
from shared.cli import report_metrics
from shared.errors import DataError, cli_entry
from shared.images import list_images

KEYS = ("SAD", "MSE", "Grad", "Conn")


def evaluate_folders(pred_dir: Path, gt_dir: Path, trimap_dir: Path) -> tuple[dict, dict]:
    """Mean and per-image metrics over the unknown region of each trimap."""
    # infer.py writes "<stem>_composite.png" previews next to the alphas; they are not predictions.
    preds = {p.stem: p for p in list_images(pred_dir) if not p.stem.endswith("_composite")}
    if not preds:
        raise DataError(f"{pred_dir}: no predicted alpha images found")
    gts = {p.stem: p for p in list_images(gt_dir)}
    unpaired = sorted(set(preds) - set(gts))
    if unpaired:
        raise DataError(f"{preds[unpaired[0]]}: no ground truth with stem '{unpaired[0]}' in {gt_dir} "
                        f"({len(unpaired)} unpaired: {', '.join(unpaired[:5])})")
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise DataError(f"{gts[missing[0]]}: no prediction with stem '{missing[0]}' in {pred_dir} "
                        f"({len(missing)} missing: {', '.join(missing[:5])})")
    pairs = [(preds[s], gts[s]) for s in sorted(preds)]
    trimaps = {p.stem: p for p in list_images(trimap_dir)}
    for line in conversion_notes([("predictions", [p for p, _ in pairs], "L", True),
                                  ("ground truths", [g for _, g in pairs], "L", True),
                                  ("trimaps", [trimaps[p.stem] for p, _ in pairs if p.stem in trimaps], "L", False)]):
        print(f"note: {line}", file=sys.stderr)
    per_image = {}
    notes = TrimapNotes()
    for pred_path, gt_path in pairs:
        if pred_path.stem not in trimaps:
            raise DataError(f"{pred_path}: no trimap with stem '{pred_path.stem}' in {trimap_dir}")
        pred, gt = read_alpha(pred_path), read_alpha(gt_path)
        trimap = read_trimap(trimaps[pred_path.stem], notes)
        for name, arr, path in (("prediction", pred, pred_path), ("trimap", trimap, trimaps[pred_path.stem])):
            if arr.shape != gt.shape:
                raise DataError(f"{path}: {name} is {arr.shape[1]}x{arr.shape[0]} but {gt_path} is "
                                f"{gt.shape[1]}x{gt.shape[0]}")
        per_image[pred_path.stem] = compute_metrics(pred.astype(np.float64), gt.astype(np.float64), trimap).as_dict()
    if notes.line():
        print(notes.line(), file=sys.stderr)
    mean = {k: float(np.mean([m[k] for m in per_image.values()])) for k in KEYS}
    return mean, per_image


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description="Matting metrics on folders of alpha mattes.")
    p.add_argument("--pred", type=Path, required=True, help="folder of predicted alpha PNGs")
    p.add_argument("--gt", type=Path, required=True, help="folder of ground-truth alphas (matched by stem)")
    p.add_argument("--trimap", type=Path, required=True, help="folder of trimaps (0/128/255; JPEG or resized ones are quantised; matched by stem)")
    p.add_argument("--output", type=Path, default=Path("metrics.json"), help="JSON file to write")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    mean, per_image = evaluate_folders(args.pred, args.gt, args.trimap)
    return report_metrics(args.output, mean, per_image, columns=KEYS)


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    main(argv)
