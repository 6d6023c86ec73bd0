"""Training command: parse flags, load and validate the config, run the epoch loop."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from alphagan_matting.cfg_loader import load_config
from alphagan_matting.schemas import Config
from alphagan_matting.train_pipeline.trainer import RunOptions, run_training
from shared.amp import PRECISIONS
from shared.device import DEVICE_CHOICES
from shared.errors import ConfigError, DataError, cli_entry
from shared.tracking import TRACKERS
from shared.training import add_run_arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description="Train AlphaGAN (image + trimap -> alpha).")
    p.add_argument("--config", default="configs/default.yaml",
                   help="YAML config (a relative configs/<name>.yaml falls back to the packaged copy)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--csv", type=Path,
                      help="dataset_labels.csv written by prepare_data.py labels (default: dataset/dataset_labels.csv "
                           "beside main.py; in the current folder for the alphagan-train command)")
    data.add_argument("--synthetic", action="store_true", help="procedural mattes instead of a CSV")
    p.add_argument("--bg", type=Path, default=None,
                   help="folder of backgrounds (searched recursively) that training composites draw from each "
                        "epoch; default: the backgrounds the CSV names")
    p.add_argument("--synthetic-size", type=int, default=8, help="number of synthetic training samples")
    p.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="override train.amp (default: bf16/fp16 from train.amp.dtype when use_amp=1, else fp32)")
    p.add_argument("--seed", type=int, default=None, help="override general.random_seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (bit-exact on CPU)")
    p.add_argument("--tracker", choices=TRACKERS, default="tensorboard", help="experiment tracker")
    p.add_argument("--epochs", type=int, default=None, help="override train.epoches")
    p.add_argument("--batch-size", type=int, default=None, help="override general.batch_size")
    p.add_argument("--checkpoints-dir", type=Path, default=None, help="override general.checkpoints_dir")
    p.add_argument("--log-dir", type=Path, default=None, help="override general.log_dir")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="encoder weights (our checkpoint or a torchvision ResNet-50 state dict); else random init")
    p.add_argument("--repeat", type=int, default=1,
                   help="training crops per foreground per epoch, each with its own augmentation (a few "
                        "foregrounds make epochs of 1-2 steps otherwise, validated and saved every time)")
    p.add_argument("--max-grad-norm", type=float, default=0.0, help="clip gradients to this norm (0: off)")
    # --resume PATH|auto, --overwrite, --max-minutes, --max-steps (in total, resumed steps included).
    add_run_arguments(p, folder_flag="--checkpoints-dir")
    return p


def apply_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    g, t = cfg.general, cfg.train
    if args.seed is not None:
        g = dataclasses.replace(g, random_seed=args.seed)
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
        g = dataclasses.replace(g, batch_size=args.batch_size)
    if args.checkpoints_dir is not None:
        g = dataclasses.replace(g, checkpoints_dir=str(args.checkpoints_dir))
    if args.log_dir is not None:
        g = dataclasses.replace(g, log_dir=str(args.log_dir))
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
        t = dataclasses.replace(t, epoches=args.epochs)
    return dataclasses.replace(cfg, general=g, train=t)


LABELS_CSV = Path("dataset") / "dataset_labels.csv"


def default_csv(script_dir: Path | None = None) -> Path:
    """The spec's labels file, ``dataset/dataset_labels.csv`` beside ``main.py`` (``script_dir``), or in the
    current folder for the console script, which has no folder of its own."""
    return (Path.cwd() if script_dir is None else Path(script_dir)) / LABELS_CSV


def resolve_csv(args: argparse.Namespace, script_dir: Path | None = None) -> Path | None:
    """``--csv``, else the default labels file (which must exist); None with ``--synthetic``."""
    if args.synthetic:
        return None
    if args.csv is not None:
        return args.csv
    csv = default_csv(script_dir)
    if not csv.is_file():
        raise DataError(f"{csv}: labels CSV not found (the default: make it with prepare_data.py labels, "
                        "or pass --csv PATH or --synthetic)")
    return csv


def main(argv: list[str] | None = None, script_dir: Path | None = None) -> int:
    """Train; ``script_dir`` is the folder of the ``main.py`` that was run (where the default data lives)."""
    args = build_parser().parse_args(argv)
    cfg = apply_overrides(load_config(args.config), args)
    csv = resolve_csv(args, script_dir)
    if args.synthetic_size < 1:
        raise ConfigError(f"--synthetic-size must be >= 1, got {args.synthetic_size}")
    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {args.num_workers}")
    opts = RunOptions(csv=csv, synthetic=args.synthetic, synthetic_size=args.synthetic_size,
                      device=args.device, precision=args.precision, deterministic=args.deterministic,
                      resume=args.resume, overwrite=args.overwrite, tracker=args.tracker,
                      num_workers=args.num_workers, pretrained=args.pretrained, max_grad_norm=args.max_grad_norm,
                      repeat=args.repeat, bg=args.bg,
                      max_minutes=args.max_minutes, max_steps=args.max_steps)
    return run_training(cfg, opts)


@cli_entry
def cli(argv: list[str] | None = None, script_dir: Path | None = None) -> None:
    sys.exit(main(argv, script_dir))
