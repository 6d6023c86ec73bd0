"""Argument parsing for the three entry points (``main.py``, ``infer.py``, ``evaluate.py``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from gansformer_inpaint.config import Config
from shared.device import resolve_device
from shared.errors import cli_entry
from shared.tracking import TRACKERS
from shared.training import add_run_arguments

DEFAULTS = Config()
# No argparse choices: any device torch has here (cuda:1 included) is valid, and resolve_device refuses one
# that is not there in one line.
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps: any device that exists on this machine"


def train_parser() -> argparse.ArgumentParser:
    # "resolve": this trainer's --max-steps (default 0) predates the scaffold's and replaces it below.
    p = argparse.ArgumentParser(description="Train GANsformer face inpainting.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, conflict_handler="resolve")
    p.add_argument("--epochs", type=int, default=DEFAULTS.num_epochs, help="number of training epochs")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="batch size per process")
    p.add_argument("--lr", type=float, default=DEFAULTS.learning_rate, help="learning rate (G; D gets lr*d-lr-ratio)")
    p.add_argument("--d-lr-ratio", type=float, default=DEFAULTS.d_lr_ratio, help="D learning rate / G learning rate")
    p.add_argument("--data-root", default=DEFAULTS.data_root, help="folder with extracted/, ground_truth/ [, mask/]")
    p.add_argument("--device", default=DEFAULTS.device, help=DEVICE_HELP)
    p.add_argument("--precision", default=DEFAULTS.precision, choices=("fp32", "fp16", "bf16"),
                   help="autocast precision (AMP)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data loading workers")
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="checkpoint to resume from (latest.pth or checkpoint_<step>.pt); 'auto': latest.pth of "
                        "--checkpoint-dir, else its newest checkpoint_<step>.pt, else start fresh")
    add_run_arguments(p, resume=False)
    p.add_argument("--wandb", dest="wandb", action="store_true", default=True, help="log to Weights & Biases")
    p.add_argument("--no-wandb", dest="wandb", action="store_false", help="disable W&B logging")
    p.add_argument("--tracker", default=None, choices=TRACKERS,
                   help="tracker backend; overrides --wandb/--no-wandb (default: wandb, or none with --no-wandb)")
    p.add_argument("--wandb-project", default="gansformer-inpaint", help="W&B project (MLflow experiment)")
    p.add_argument("--wandb-entity", default=None, help="W&B entity (user or team)")
    p.add_argument("--wandb-name", default=None, help="run name")
    p.add_argument("--save-interval", type=int, default=DEFAULTS.save_interval, help="steps between checkpoints")
    p.add_argument("--keep-last", type=int, default=DEFAULTS.keep_last,
                   help="keep only this run's newest N checkpoint_<step>.pt (0: keep all)")
    p.add_argument("--sample-interval", type=int, default=DEFAULTS.sample_interval, help="epochs between sample grids")
    p.add_argument("--log-interval", type=int, default=DEFAULTS.log_interval, help="steps between metric logs")
    p.add_argument("--checkpoint-dir", default=DEFAULTS.checkpoint_dir,
                   help="run folder: checkpoints, samples/, metrics.jsonl, loss_curve.png, tracker files")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (bit-exact on CPU)")
    p.add_argument("--synthetic", action="store_true", help="procedural faces with random masks, no dataset")
    p.add_argument("--synthetic-size", type=int, default=DEFAULTS.synthetic_size, help="synthetic images per epoch")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps in total (0: all epochs)")
    p.add_argument("--random-mask-prob", type=float, default=DEFAULTS.random_mask_prob,
                   help="chance that a real pair's hole is replaced by a random strokes + boxes mask (new every epoch)")
    p.add_argument("--flip", dest="flip", action="store_true", default=DEFAULTS.flip,
                   help="random horizontal flips of real pairs")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no flips")
    p.add_argument("--val-root", default=DEFAULTS.val_root,
                   help="held-out pairs (same layout as --data-root) to validate on and choose best.pth by hole "
                        "PSNR; default: the first 4 training pairs with their own holes")
    p.add_argument("--val-interval", type=int, default=DEFAULTS.val_interval,
                   help="steps between validations (0: at the end of every epoch); a budget stop validates too")
    arch = p.add_argument_group("model size (defaults are the spec's; smaller for CPU demos and tests)")
    arch.add_argument("--img-size", type=int, default=DEFAULTS.img_size)
    arch.add_argument("--base-channels", type=int, default=DEFAULTS.base_channels)
    arch.add_argument("--d-channels", type=int, default=DEFAULTS.d_channels)
    arch.add_argument("--latent-num", type=int, default=DEFAULTS.latent_num)
    arch.add_argument("--latent-dim", type=int, default=DEFAULTS.latent_dim)
    arch.add_argument("--num-heads", type=int, default=DEFAULTS.num_heads)
    arch.add_argument("--num-blocks", type=int, default=DEFAULTS.num_gansformer_blocks,
                      help="GANsformer blocks in the bottleneck")
    loss = p.add_argument_group("losses")
    loss.add_argument("--l1-weight", type=float, default=DEFAULTS.l1_weight)
    loss.add_argument("--hole-weight", type=float, default=DEFAULTS.hole_weight)
    loss.add_argument("--adv-weight", type=float, default=DEFAULTS.adv_weight)
    loss.add_argument("--r1-gamma", type=float, default=DEFAULTS.r1_gamma)
    loss.add_argument("--d-reg-interval", type=int, default=DEFAULTS.d_reg_interval)
    loss.add_argument("--max-grad-norm", type=float, default=DEFAULTS.max_grad_norm, help="gradient clipping (0: off)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(
        img_size=args.img_size, base_channels=args.base_channels, latent_num=args.latent_num,
        latent_dim=args.latent_dim, num_heads=args.num_heads, num_gansformer_blocks=args.num_blocks,
        d_channels=args.d_channels, learning_rate=args.lr, d_lr_ratio=args.d_lr_ratio, num_epochs=args.epochs,
        batch_size=args.batch_size, l1_weight=args.l1_weight, hole_weight=args.hole_weight,
        adv_weight=args.adv_weight, r1_gamma=args.r1_gamma, d_reg_interval=args.d_reg_interval,
        max_grad_norm=args.max_grad_norm, precision=args.precision, data_root=args.data_root, workers=args.workers,
        synthetic=args.synthetic, synthetic_size=args.synthetic_size, seed=args.seed,
        random_mask_prob=args.random_mask_prob, flip=args.flip, val_root=args.val_root or "",
        val_interval=args.val_interval,
        deterministic=args.deterministic, device=args.device, checkpoint_dir=args.checkpoint_dir,
        save_interval=args.save_interval, keep_last=args.keep_last, sample_interval=args.sample_interval,
        log_interval=args.log_interval, max_steps=args.max_steps,
    ).validate()


def tracker_backend(args: argparse.Namespace) -> str:
    if args.tracker:
        return args.tracker
    if not args.wandb or os.environ.get("WANDB_MODE") == "disabled":
        return "none"
    return "wandb"


def train_main(argv: Sequence[str] | None = None) -> dict:
    from gansformer_inpaint.training.trainer import TrackerOptions, Trainer

    args = train_parser().parse_args(argv)
    resolve_device(args.device)  # before anything starts: a device that is not here is a one-line error
    cfg = config_from_args(args)
    # W&B is optional (an extra): only an explicit --tracker wandb insists on it; the --wandb default falls
    # back to local logging when it is not installed.
    tracker = TrackerOptions(tracker_backend(args), args.wandb_project, args.wandb_entity, args.wandb_name,
                             wandb_optional=not args.tracker)
    return Trainer(cfg, tracker, resume=args.resume, overwrite=args.overwrite, max_minutes=args.max_minutes).fit()


def infer_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Fill the holes of images with a trained generator.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="training checkpoint (latest.pth, best.pth, checkpoint_N.pt)")
    p.add_argument("--image", required=True, help="masked image, or a folder of them")
    p.add_argument("--mask", required=True, help="mask (255 = hole), or a folder of masks named like the images")
    p.add_argument("--output", required=True, help="output PNG (single image) or folder")
    p.add_argument("--mode", default="resize", choices=("resize", "tile"),
                   help="resize: run at the model size, paste the upscaled fill into the full-resolution hole; "
                        "tile: run on overlapping model-size tiles at full resolution")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (--mode tile)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    return p


def infer_main(argv: Sequence[str] | None = None) -> list:
    from gansformer_inpaint.inference import run_inference

    args = infer_parser().parse_args(argv)
    resolve_device(args.device)
    return run_inference(args.checkpoint, args.image, args.mask, args.output, args.mode, args.overlap, args.device)


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PSNR, SSIM and L1 over the hole on a folder of pairs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True, help="folder with extracted/, ground_truth/ [, mask/]")
    p.add_argument("--output", default="metrics.json", help="metrics JSON file")
    p.add_argument("--save-images", default=None, help="also write the inpainted images to this folder")
    p.add_argument("--mode", default="resize", choices=("resize", "tile"))
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    return p


def evaluate_main(argv: Sequence[str] | None = None) -> dict:
    from gansformer_inpaint.evaluation import run_evaluation

    args = evaluate_parser().parse_args(argv)
    resolve_device(args.device)
    return run_evaluation(args.checkpoint, args.data_root, args.output, args.save_images, args.mode, args.device)


@cli_entry
def train_entry(argv: Sequence[str] | None = None) -> None:
    train_main(argv)


@cli_entry
def infer_entry(argv: Sequence[str] | None = None) -> None:
    infer_main(argv)


@cli_entry
def evaluate_entry(argv: Sequence[str] | None = None) -> None:
    evaluate_main(argv)
