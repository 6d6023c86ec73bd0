"""AlphaGAN matting: the CPU recipe (``configs/real_cpu.yaml``) trained through ``main.py``, scored by SAD.

Training: the train dir's foregrounds become a labels CSV through the package's own ``prepare_labels``
(one foreground held out as the validation split that picks ``best.pth``; every training foreground
is composited over a new background of ``bg/`` each epoch). Evaluation: each eval photo (``original/``)
with its own trimap, predicted at full resolution by the package's ``predict_alpha`` and scored by its
``compute_metrics`` (SAD, MSE, Grad, Conn over the unknown region); the trimap itself (unknown = 0.5)
and pymatting's closed-form matting go through the same metric function.
"""

from __future__ import annotations

import time
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

CONFIG = "configs/real_cpu.yaml"
# Each foreground ten times per epoch (own crop, background, flip each): validation and checkpoints
# every 15 steps instead of every 2.
REPEAT = 10
# One of the seven sample foregrounds: validation must not eat the few training images.
VALIDATION_FRACTION = 0.15
GRID_ROWS = 3


def _alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    return (np.clip(alpha, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class AlphaGANAdapter(Adapter):
    package = "alphagan_matting"
    main_metric = "SAD"
    higher_is_better = False
    trivial_baseline = "trimap"
    classical_baseline = "closed-form"

    def train_command(self, train_dir: Path, work: Path, minutes: float, device: str) -> TrainCommand:
        from alphagan_matting.dataset import prepare_labels

        csv = prepare_labels(train_dir, train_dir / "bg", work / "dataset_labels.csv",
                             test_fraction=VALIDATION_FRACTION)
        argv = ["main.py", "--config", CONFIG, "--csv", str(csv), "--bg", str(train_dir / "bg"),
                "--repeat", str(REPEAT), "--device", device,
                "--checkpoints-dir", str(work / "checkpoints"), "--log-dir", str(work / "tb"),
                "--tracker", "tensorboard", "--max-minutes", f"{minutes:g}", "--overwrite"]
        return TrainCommand(argv, package_dir(self.package))

    def best_checkpoint(self, work: Path) -> Path:
        return first_file(work / "checkpoints" / "best.pth", work / "checkpoints" / "latest.pth")

    def curve(self, work: Path) -> Curve:
        return tensorboard_curve(work / "tb", "val/sad", {"trimap": "val/sad_trimap"})

    def evaluate(self, checkpoint: Path, eval_dir: Path, work: Path, device: str) -> Evaluation:
        from pymatting import estimate_alpha_cf

        from alphagan_matting.infer import load_generator, predict_alpha
        from alphagan_matting.losses.metrics import compute_metrics
        from alphagan_matting.utils import read_alpha, read_trimap, trimap_to_unit
        from shared.device import resolve_device
        from shared.images import list_images, read_image

        torch_device = resolve_device(device)
        generator, mean, std = load_generator(checkpoint, torch_device)
        per_image: dict[str, dict[str, dict[str, float]]] = {}
        seconds = {"model": 0.0, "closed-form": 0.0}
        grid = []
        for path in list_images(eval_dir / "original"):
            image = read_image(path, dtype="float32")
            trimap = read_trimap(eval_dir / "trimap" / path.name)
            gt = read_alpha(eval_dir / "mask" / path.name).astype(np.float64)
            start = time.monotonic()
            model = predict_alpha(generator, image, trimap, mean, std, torch_device).astype(np.float64)
            seconds["model"] += time.monotonic() - start
            trivial = trimap_to_unit(trimap).astype(np.float64)
            start = time.monotonic()
            closed = np.clip(estimate_alpha_cf(image.astype(np.float64), trivial), 0.0, 1.0)
            seconds["closed-form"] += time.monotonic() - start
            alphas = {"model": model, "trimap": trivial, "closed-form": closed}
            per_image[path.stem] = {name: compute_metrics(alpha, gt, trimap).as_dict()
                                    for name, alpha in alphas.items()}
            if len(grid) < GRID_ROWS:
                grid.append([("input", (image * 255 + 0.5).astype(np.uint8)),
                             ("trimap", trimap), ("closed-form", _alpha_to_uint8(closed)),
                             ("model", _alpha_to_uint8(model)), ("target", _alpha_to_uint8(gt))])
        names = ("model", "trimap", "closed-form")
        keys = ("SAD", "MSE", "Grad", "Conn")
        metrics = {name: {k: float(np.mean([m[name][k] for m in per_image.values()])) for k in keys}
                   for name in names}
        notes = {"per_image": per_image, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                 "units": "Composition-1k: SAD, Grad, Conn / 1000; alphas in 0..1; unknown region of the "
                          "eval trimap; full resolution",
                 "curve": "val/sad on the held-out training foreground, resized to test.resize_size"}
        return Evaluation(metrics, grid, len(per_image), notes)


ADAPTER = AlphaGANAdapter()
