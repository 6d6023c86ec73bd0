"""Data preparation: unpack the AIM-500 / BG-20k zips safely and write dataset_labels.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from alphagan_matting.dataset import prepare_labels, unpack_archives
from shared.errors import cli_entry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prepare_data.py", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("unpack", help="extract zip archives (refusing entries that leave the destination)")
    u.add_argument("zips", type=Path, nargs="+", help="zip archive(s)")
    u.add_argument("--dst", type=Path, required=True, help="destination folder")
    lab = sub.add_parser("labels", help="write dataset_labels.csv")
    lab.add_argument("--fg", type=Path, required=True, help="AIM-500 folder with mask/, trimap/, original/")
    lab.add_argument("--bg", type=Path, required=True, help="BG-20k folder (searched recursively)")
    lab.add_argument("--output", type=Path, default=Path("dataset/dataset_labels.csv"))
    lab.add_argument("--test-fraction", type=float, default=0.1, help="share of foregrounds in the test split")
    lab.add_argument("--seed", type=int, default=1669, help="seed for the split and background choice")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "unpack":
        for zip_path in args.zips:
            files = unpack_archives(zip_path, args.dst)
            print(f"{zip_path}: {len(files)} files -> {args.dst}")
    else:
        out = prepare_labels(args.fg, args.bg, args.output, test_fraction=args.test_fraction, seed=args.seed)
        print(f"wrote {out}")


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    main(argv)
