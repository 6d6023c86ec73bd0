"""Training configuration: the spec's ``args`` dict as flags with the same defaults, plus the contract's."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from shared.amp import PRECISIONS
from shared.device import DEVICE_CHOICES
from shared.tracking import TRACKERS


@dataclass
class TrainConfig:
    # --- the spec's args dict, same names and defaults ---
    image_dir: str = "/workspace/original"
    gt_dir: str = "/workspace/retouch/"
    num_epochs: int = 200
    batch_size: int = 16
    learning_rate: float = 0.0005
    save_dir: str = "dc_newarchnew/"
    patch_size: int = 2048
    stride: int = 1536
    pyramid_levels: int = 1
    mask_threshold: float = 6.0  # spec: 3 (with magnifier 5 against the input); see masks.py
    sample_save_freq: int = 1
    pretrained_path: str = ""
    # --- ours ---
    magnifier: float = 1.0
    mask_reference: str = "tone_curve"
    val_fraction: float = 0.2
    val_image_dir: str = ""
    val_gt_dir: str = ""
    val_every: int = 0
    val_tile_size: int = 512
    no_flip: bool = False
    balance_images: bool = False
    base_channels: int = 32
    refine_channels: int = 16
    synthetic: bool = False
    synthetic_count: int = 8
    synthetic_size: int = 0
    pad_small: bool = False
    strict_pairs: bool = False
    num_workers: int = 2
    cache_images: int = 2
    device: str = "auto"
    precision: str = "auto"
    seed: int = 42
    deterministic: bool = False
    resume: str = ""
    overwrite: bool = False
    max_minutes: float | None = None
    max_steps: int | None = None
    tracker: str = "wandb"
    project: str = "abpn_retouch"
    run_name: str = ""
    save_every: int = 10
    keep_last: int = 0
    max_grad_norm: float = 1.0
    find_unused_parameters: bool = False
    vgg_weights: str = ""
    perceptual_size: int = 512
    w_masked_l1: float = 1.3
    w_global_l1: float = 1.0
    w_edge: float = 1.0
    w_high_freq: float = 0.7
    w_perceptual: float = 0.5
    w_dice: float = 1.0
    log_every: int = 10


HELP = {
    "image_dir": "folder of original photos (jpg/png/tif)",
    "gt_dir": "folder of retouched photos, same base names",
    "num_epochs": "epochs to train",
    "batch_size": "patches per step per process",
    "learning_rate": "Adam learning rate",
    "save_dir": "run folder: checkpoints, samples, tracker files",
    "patch_size": "training patch side in pixels",
    "stride": "distance between patch origins (patch_size - overlap)",
    "pyramid_levels": "levels of the adaptive blend pyramid (LRNet runs at 1/2**levels)",
    "mask_threshold": "threshold on the amplified V difference for the GT mask (the spec's: 3)",
    "sample_save_freq": "save a sample grid every N epochs",
    "pretrained_path": "load model weights from this checkpoint before training",
    "magnifier": "amplification of the V difference before thresholding (the spec's: 5)",
    "mask_reference": "GT mask: V change not explained by the pair's global tone curve (tone_curve), or any V "
                      "change from the input (input, the spec's; covers 91-100%% of real pairs)",
    "val_fraction": "fraction of the pairs held out for validation (whole pairs, at least one; 0 = none, then "
                    "best.pth follows the training loss); ignored with --val-image-dir",
    "val_image_dir": "validation originals (with --val-gt-dir) instead of holding out training pairs",
    "val_gt_dir": "validation retouched photos, same base names as --val-image-dir",
    "val_every": "validate every N steps as well as at each epoch end (0 = epoch ends only); a --max-minutes "
                 "stop validates the final weights too",
    "val_tile_size": "tile side for validating whole images",
    "balance_images": "repeat each pair's patches up to the largest pair's patch count, so small photos count "
                      "as much as large ones",
    "no_flip": "turn off the random left-right flips (input, target and mask flipped together)",
    "base_channels": "LRNet width",
    "refine_channels": "width of each pyramid refinement block",
    "synthetic": "train on procedural portraits instead of --image-dir/--gt-dir",
    "synthetic_count": "number of synthetic pairs",
    "synthetic_size": "side of synthetic images (0: patch_size + stride, i.e. 2×2 patches each)",
    "pad_small": "reflect-pad images smaller than a patch instead of refusing them",
    "strict_pairs": "refuse a file with no partner of the same base name in the other folder (default: leave "
                    "it out and list it once)",
    "num_workers": "DataLoader worker processes",
    "cache_images": "decoded pairs kept per worker (0 = decode for every patch)",
    "device": "compute device",
    "precision": "auto = fp16 AMP on CUDA, fp32 elsewhere",
    "seed": "seed for weights and data order",
    "deterministic": "deterministic kernels (bit-exact on CPU)",
    "resume": "resume exactly from this training checkpoint; 'auto': from latest.pth in --save-dir if there is "
              "one, else start fresh (for restarted jobs)",
    "overwrite": "allow starting a fresh run in a --save-dir that already holds a run",
    "max_minutes": "stop after this many minutes of training, saving latest.pth (--resume continues)",
    "max_steps": "stop after this many optimizer steps in all, saving latest.pth (--resume continues)",
    "tracker": "experiment tracker (WANDB_MODE honoured; offline without an API key)",
    "project": "tracker project / experiment name",
    "run_name": "tracker run name",
    "save_every": "periodic checkpoint every N epochs (0 = none)",
    "keep_last": "keep only the newest N periodic checkpoints of this run (0 = keep all)",
    "max_grad_norm": "gradient clipping norm (0 = off)",
    "find_unused_parameters": "DDP find_unused_parameters (not needed: every parameter is used)",
    "vgg_weights": "VGG16 ImageNet weights file for the perceptual loss",
    "perceptual_size": "images are area-downsampled to this long side before VGG",
    "w_masked_l1": "masked L1 weight", "w_global_l1": "global L1 weight", "w_edge": "masked Sobel weight",
    "w_high_freq": "masked Laplacian weight", "w_perceptual": "VGG16 perceptual weight", "w_dice": "Dice weight",
    "log_every": "log step metrics every N steps",
}

CHOICES = {"mask_reference": ("tone_curve", "input"), "device": DEVICE_CHOICES, "precision": ("auto", *PRECISIONS), "tracker": TRACKERS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train ABPN (patch-wise, DDP under torchrun, AMP).")
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=HELP[field.name])
            continue
        # "X | None": the flag is off (None) unless given.
        kind = {"int": int, "float": float, "str": str}[str(field.type).removesuffix(" | None")]
        parser.add_argument(flag, type=kind, default=field.default, choices=CHOICES.get(field.name),
                            help=f"{HELP[field.name]} (default: {field.default!r})")
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(build_parser().parse_args(argv)))
