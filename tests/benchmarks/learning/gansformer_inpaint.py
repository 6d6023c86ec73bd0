"""gansformer_inpaint: hole PSNR of the model against a mean-colour fill (trivial) and OpenCV TELEA (classical).

Training runs ``main.py`` on ``--train-dir`` minus a few held-out pairs that it validates on (``--val-root``)
and chooses ``best.pth`` by; evaluation is the package's own ``run_evaluation`` at full resolution, and the
baselines are scored with the same ``hole_metrics`` on the same masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.benchmarks.learning.core import (
    Adapter,
    Curve,
    Evaluation,
    TrainCommand,
    first_file,
    package_dir,
    tensorboard_curve,
)

PACKAGE = "gansformer_inpaint"
FOLDERS = ("extracted", "ground_truth", "mask")
# The recommended CPU recipe (README, "Recommended recipe"): a 64 px model, small widths, the dataset's own
# holes mixed with random strokes + boxes, flips, and the spec's losses.
RECIPE = ["--img-size", "64", "--base-channels", "16", "--d-channels", "16", "--latent-dim", "128",
          "--latent-num", "16", "--batch-size", "4", "--random-mask-prob", "0.5", "--flip"]
GRID_ROWS = 3


def split_train_val(train_dir: Path, out: Path) -> tuple[Path, Path | None]:
    """Symlinked ``train/`` and ``val/`` folders: every 4th pair (sorted by name, from the 4th) is held out."""
    stems = sorted(p.stem for p in (train_dir / "ground_truth").iterdir() if p.is_file())
    held = set(stems[3::4]) if len(stems) >= 4 else set()
    for name, keep in (("train", lambda s: s not in held), ("val", lambda s: s in held)):
        for folder in FOLDERS:
            source = train_dir / folder
            if not source.is_dir():
                continue
            target = out / name / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(source.iterdir()):
                link = target / path.name
                if path.is_file() and keep(path.stem) and not link.exists():
                    link.symlink_to(path.resolve())
    return out / "train", (out / "val" if held else None)


class GansformerAdapter(Adapter):
    package = PACKAGE
    main_metric = "psnr_hole"
    higher_is_better = True
    trivial_baseline = "mean_fill"
    classical_baseline = "telea"

    def train_command(self, train_dir: Path, work: Path, minutes: float, device: str) -> TrainCommand:
        train, val = split_train_val(train_dir, work / "data")
        argv = ["main.py", "--data-root", str(train), "--checkpoint-dir", str(work / "checkpoints"),
                "--epochs", "1000000", "--max-minutes", f"{minutes:g}", "--device", device, "--workers", "0",
                "--tracker", "tensorboard", "--log-interval", "10", "--sample-interval", "1000000",
                "--save-interval", "1000000", "--overwrite", *RECIPE]
        if val is not None:
            argv += ["--val-root", str(val)]
        return TrainCommand(argv, package_dir(PACKAGE))

    def best_checkpoint(self, work: Path) -> Path:
        return first_file(work / "checkpoints" / "best.pth", work / "checkpoints" / "latest.pth")

    def curve(self, work: Path) -> Curve:
        return tensorboard_curve(work / "checkpoints", "val/psnr_hole", {"mean fill (validation)": "val/psnr_hole_meanfill"})

    def evaluate(self, checkpoint: Path, eval_dir: Path, work: Path, device: str) -> Evaluation:
        import cv2
        import torch

        from gansformer_inpaint.dataloader.loader import InpaintingDataset
        from gansformer_inpaint.dataloader.masks import derive_mask
        from gansformer_inpaint.evaluation import hole_metrics, mean_fill, run_evaluation
        from gansformer_inpaint.inference import read_mask
        from shared.images import read_image, to_tensor

        images = work / "eval_images"
        report = run_evaluation(str(checkpoint), str(eval_dir), str(work / "eval_metrics.json"), str(images),
                                "resize", device)
        keys = ["psnr_hole", "ssim_hole", "l1_hole", "psnr", "ssim"]
        scores: dict[str, list[dict[str, float]]] = {"mean_fill": [], "telea": []}
        grid = []
        for masked_path, gt_path, mask_path in InpaintingDataset(eval_dir).items:
            masked, gt = read_image(masked_path), read_image(gt_path)
            mask = read_mask(mask_path) if mask_path is not None else \
                torch.from_numpy(derive_mask(masked, gt))[None]
            masked_t, gt_t = to_tensor(masked), to_tensor(gt)
            hole8 = mask[0].numpy().astype(np.uint8) * 255
            filled = {
                "mean_fill": mean_fill(masked_t, mask),
                "telea": to_tensor(cv2.inpaint(masked, hole8, 3, cv2.INPAINT_TELEA)),
            }
            for name, pred in filled.items():
                scores[name].append(hole_metrics(pred, gt_t, mask))
            if len(grid) < GRID_ROWS:
                model = read_image(images / f"{masked_path.stem}.png")
                grid.append([("input", masked), *((n, _uint8(p)) for n, p in filled.items()),
                             ("model", model), ("target", gt)])
        metrics = {"model": {k: float(report["mean"][k]) for k in keys}}
        for name, rows in scores.items():
            metrics[name] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        notes = {"checkpoint": checkpoint.name, "mode": "resize (fill at the model size, pasted into the full-size hole)",
                 "recipe": " ".join(RECIPE)}
        return Evaluation(metrics, grid, int(report["count"]), notes)


def _uint8(image) -> np.ndarray:
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


ADAPTER = GansformerAdapter()
