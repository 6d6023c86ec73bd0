"""deblur_unet: the recommended real-data recipe through ``train.py``, scored by the package's own
``evaluate_pairs`` (PSNR/SSIM of the tiled model output and of the blurry input against the sharp image)."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.learning.core import (
    Adapter,
    Curve,
    Evaluation,
    TrainCommand,
    first_file,
    package_dir,
    tensorboard_curve,
)

# The recommended recipe (packages/deblur_unet/README.md, "Recommended recipe on real data"): a global
# residual whose head starts at zero (the untrained model is the identity, at the input's PSNR), a
# narrow fast U-Net with a high learning rate, several crops per frame from decoded frames kept in
# memory, no early stopping (a validation crop of one frame is too noisy to stop on), and the rate
# annealed to zero over the last 30% of the time budget (the high constant rate's noise averaged out),
# and half of the crops blurred by random motion kernels instead of their recorded blur (seven frames
# hold few blur directions and lengths).
RECIPE = ["--residual", "--zero-init", "--base-ch", "8", "--patch-size", "128", "--batch-size", "4",
          "--synthetic-blur", "0.5",
          "--lr", "0.002", "--lr-decay-fraction", "0.3", "--crops-per-image", "8", "--cache-images",
          "--num-workers", "0", "--val-patch-size", "512", "--patience", "0", "--sample-every", "0",
          "--save-every", "0"]
GRID_IMAGES = 3
GRID_CROP = 320  # the centre of each frame at full resolution: at thumbnail size every image looks sharp


class DeblurAdapter(Adapter):
    package = "deblur_unet"
    main_metric = "psnr"
    higher_is_better = True
    trivial_baseline = "input"
    classical_baseline = None

    def train_command(self, train_dir: Path, work: Path, minutes: float, device: str) -> TrainCommand:
        argv = ["train.py", "--data-dir", str(train_dir), "--checkpoint-dir", str(work / "checkpoints"),
                "--output-dir", str(work / "outputs"), "--tracker", "tensorboard", "--overwrite",
                "--epochs", "1000000", "--max-minutes", f"{minutes:g}", "--device", device, *RECIPE]
        return TrainCommand(argv, package_dir(self.package), {"PYTHONUNBUFFERED": "1"})

    def best_checkpoint(self, work: Path) -> Path:
        # The end of the run, not best.pth: best.pth is picked on one frame's validation crop, too noisy
        # to choose by (a best.pth from mid-run scored +0.01 dB on the evaluation frames where the final
        # state, after the rate's decay, scored +0.12; README), and the decay is meant to end best.
        return first_file(work / "checkpoints" / "latest.pth", work / "checkpoints" / "best.pth")

    def curve(self, work: Path) -> Curve:
        return tensorboard_curve(work / "outputs", "val/psnr", {"input": "val/psnr_input"})

    def evaluate(self, checkpoint: Path, eval_dir: Path, work: Path, device: str) -> Evaluation:
        from deblur_unet.data import center_crop, find_pairs
        from deblur_unet.evaluate import evaluate_pairs
        from deblur_unet.inference import Deblurrer, load_model, training_tiling
        from shared.images import read_image

        pairs = find_pairs(eval_dir)
        # Tiles the size of the training patches: 512-px tiles, whose GroupNorm statistics a model trained
        # on 128-px patches never saw, cost it 0.01-0.06 dB on these frames' mean (README).
        tiling = training_tiling(checkpoint)
        engine = Deblurrer(load_model(checkpoint, "cpu"), tiling, device)
        outputs = work / "eval_outputs"
        mean, per_image = evaluate_pairs(engine, pairs, outputs)
        metrics = {"model": {"psnr": mean["psnr"], "ssim": mean["ssim"]},
                   "input": {"psnr": mean["input_psnr"], "ssim": mean["input_ssim"]}}
        grid = []
        for (name, scores), (blur_path, sharp_path) in zip(list(per_image.items())[:GRID_IMAGES], pairs,
                                                           strict=False):
            blur, sharp = read_image(blur_path), read_image(sharp_path)
            output = read_image((outputs / name).with_suffix(".png"))
            size = min(GRID_CROP, *blur.shape[:2])
            grid.append([(f"input {scores['input_psnr']:.2f} dB (trivial)", center_crop(blur, size)),
                         (f"model {scores['psnr']:.2f} dB", center_crop(output, size)),
                         ("target", center_crop(sharp, size))])
        notes = {"per_image": per_image, "tiling": {"tile_size": tiling.tile_size, "overlap": tiling.overlap},
                 "grid": f"centre {GRID_CROP}x{GRID_CROP} crops at full resolution"}
        return Evaluation(metrics, grid, len(per_image), notes)


ADAPTER = DeblurAdapter()
