"""Rebuild docs/loss_curve_demo.png and docs/astronaut_demo.png from a demo run folder.

    uv run --package gansformer_inpaint docs/make_demo_figures.py RUN_DIR EARLY_CKPT DATA_ROOT

RUN_DIR is the ``--checkpoint-dir`` of the README's demo command, EARLY_CKPT a copy of its ``latest.pth``
after epoch 1; only the public-domain astronaut is drawn. The demo run trains on every sample face, so
each figure says on its face that it shows training images, not held-out ones.
"""

import sys
from pathlib import Path

import torch

from gansformer_inpaint.inference import inpaint, load_generator, read_mask
from gansformer_inpaint.training.plot import plot_curves, read_metrics
from shared.images import make_grid, read_image, save_image, to_tensor

TRAINING = "TRAINING IMAGES, not held out: "

run_dir, early, data = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
docs = Path(__file__).resolve().parent
plot_curves(read_metrics(run_dir / "metrics.jsonl"), ["fixed_hole_l1", "hole_l1", "valid_l1", "g_adv", "d_loss"],
            docs / "loss_curve_demo.png",
            title=TRAINING + "the 11 sample faces, 64 px, 180 steps (fixed_hole_l1: 4 fixed training faces, per epoch)",
            size=(900, 220))
name = "skimage_astronaut"
masked = to_tensor(read_image(data / "extracted" / f"{name}.png"))
gt = to_tensor(read_image(data / "ground_truth" / f"{name}.png"))
mask = read_mask(data / "mask" / f"{name}.png")
row = [masked]
for ckpt in (early, run_dir / "latest.pth"):
    gen, _ = load_generator(ckpt, torch.device("cpu"))
    row.append(inpaint(gen, masked, mask))
save_image(docs / "astronaut_demo.png", make_grid(
    [row + [gt]], labels=("masked (a training image)", "after epoch 1", "after epoch 60", "ground truth")))
print("wrote", docs / "loss_curve_demo.png", docs / "astronaut_demo.png")

if len(sys.argv) > 4:  # ablation run folder: plain (non-equalised) layers at the same lr 0.002
    ablation = read_metrics(Path(sys.argv[4]) / "metrics.jsonl")
    ours = read_metrics(run_dir / "metrics.jsonl")
    records = [{"step": r["step"], "equalised layers (this package): fixed_hole_l1": r["fixed_hole_l1"]}
               for r in ours if "fixed_hole_l1" in r]
    records += [{"step": r["step"], "plain layers, same lr 0.002: fixed_hole_l1": r["fixed_hole_l1"]}
                for r in ablation if "fixed_hole_l1" in r]
    records += [{"step": r["step"], "plain layers, same lr 0.002: batch hole_l1": r["hole_l1"]}
                for r in ablation if "hole_l1" in r]
    plot_curves(records, [k for r in records[:1] for k in r if k != "step"]
                + ["plain layers, same lr 0.002: fixed_hole_l1", "plain layers, same lr 0.002: batch hole_l1"],
                docs / "ablation_plain_layers.png",
                title=TRAINING + "the same run, ordinary layers at the spec's lr 0.002",
                size=(900, 200), smooth_window=1)
    print("wrote", docs / "ablation_plain_layers.png")
