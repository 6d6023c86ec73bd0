"""abpn_retouch: the recommended real-data recipe through ``trainer.py``, scored by the package's own
``score_pair`` (PSNR/SSIM of the output and of the untouched original; mask IoU against the calibrated
GT-mask recipe, with that mask's coverage)."""

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

# The recommended recipe (see packages/abpn_retouch/README.md, "Recommended recipe on real data"): patches
# that fit the sample photos (the spec's 2048 would be mostly padding on 512 px images), no perceptual
# term unless ImageNet VGG16 weights are at hand (a random VGG only adds noise and time on a CPU).
RECIPE = ["--patch-size", "128", "--stride", "128", "--batch-size", "8", "--learning-rate", "0.0002",
          "--w-perceptual", "0", "--val-fraction", "0.25", "--val-every", "25", "--val-tile-size", "512",
          "--num-workers", "0", "--cache-images", "8", "--balance-images", "--pad-small", "--sample-save-freq", "0",
          "--save-every", "0", "--log-every", "5"]
TILE, OVERLAP = 512, 128
GRID_IMAGES = 3


class AbpnAdapter(Adapter):
    package = "abpn_retouch"
    main_metric = "psnr"
    higher_is_better = True
    trivial_baseline = "original"
    classical_baseline = None

    def train_command(self, train_dir: Path, work: Path, minutes: float, device: str) -> TrainCommand:
        argv = ["trainer.py", "--image-dir", str(train_dir / "original"), "--gt-dir", str(train_dir / "retouch"),
                "--save-dir", str(work), "--overwrite", "--tracker", "tensorboard", "--num-epochs", "1000000",
                "--max-minutes", f"{minutes:g}", "--device", device, *RECIPE]
        return TrainCommand(argv, package_dir(self.package), {"PYTHONUNBUFFERED": "1"})

    def best_checkpoint(self, work: Path) -> Path:
        return first_file(work / "best.pth", work / "latest.pth")

    def curve(self, work: Path) -> Curve:
        return tensorboard_curve(work, "val/psnr", {"original": "val/psnr_original"})

    def evaluate(self, checkpoint: Path, eval_dir: Path, work: Path, device: str) -> Evaluation:
        from abpn_retouch.data import PAIR_EXTENSIONS
        from abpn_retouch.evaluate import score_pair
        from abpn_retouch.infer import load_model
        from abpn_retouch.masks import MaskRecipe, generate_gt_mask
        from shared.device import resolve_device
        from shared.images import pair_by_stem, read_image, to_numpy_image

        torch_device = resolve_device(device)
        model = load_model(checkpoint, torch_device)
        recipe = MaskRecipe()  # the trainer's default recipe, which RECIPE keeps
        rows, grid = [], []
        for image_path, gt_path in pair_by_stem(eval_dir / "original", eval_dir / "retouch", PAIR_EXTENSIONS):
            image, target = read_image(image_path), read_image(gt_path)
            scores, output = score_pair(model, image, target, recipe, TILE, OVERLAP, torch_device)
            rows.append((image_path.stem, scores))
            if len(grid) < GRID_IMAGES:
                gt_mask = generate_gt_mask(image, target, recipe)
                grid.append([(f"original {scores['psnr_input']:.2f} dB (trivial)", image),
                             (f"model {scores['psnr']:.2f} dB", to_numpy_image(output)),
                             ("target", target),
                             (f"GT mask {100 * scores['mask_coverage']:.0f}%", _gray(gt_mask))])
        mean = {k: float(np.mean([s[k] for _, s in rows])) for k in rows[0][1]}
        metrics = {
            "model": {"psnr": mean["psnr"], "ssim": mean["ssim"], "mask_iou": mean["mask_iou"],
                      "mask_dice": mean["mask_dice"]},
            "original": {"psnr": mean["psnr_input"], "ssim": mean["ssim_input"]},
        }
        notes = {"gt_mask_coverage": mean["mask_coverage"],
                 "gt_mask_recipe": {"reference": recipe.reference, "magnifier": recipe.magnifier,
                                    "mask_threshold": recipe.mask_threshold},
                 "per_image": {name: scores for name, scores in rows}}
        return Evaluation(metrics, grid, len(rows), notes)


def _gray(mask: np.ndarray) -> np.ndarray:
    return np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)


ADAPTER = AbpnAdapter()
