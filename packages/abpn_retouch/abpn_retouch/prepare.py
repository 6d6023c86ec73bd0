"""Turn downloaded retouching pairs into the trainer's layout: ``<out>/original/<name>`` + ``<out>/retouch/<name>``.

Two sources, each given as folders or archives (zip, tar) of files, read in place::

    # MIT-Adobe FiveK: the photos rendered to TIFF/PNG/JPEG (input) and one expert's retouch (target),
    # paired by the FiveK id at the start of each file name (a0001-jmac_DSC1459.tif -> a0001)
    uv run --package abpn_retouch python -m abpn_retouch.prepare fivek --input fivek/input \
        --target fivek/expert_c --out data/fivek
    # FFHQR: FFHQ's images1024x1024 (original) and FFHQR's retouched parts, paired by image number;
    # --split keeps FFHQR's own train (00000-55999), val (56000-62999) or test (63000-69999) range
    uv run --package abpn_retouch python -m abpn_retouch.prepare ffhqr --input ffhq/images1024x1024 \
        --target ffhqr.part1.tar ffhqr.part2.tar --split train --out data/ffhqr_train

Files are copied byte for byte; an input without a target (or the reverse) is left out and counted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from shared.archives import Opener, archive_members, copy_member
from shared.errors import DataError, cli_entry

PAIR_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
RAW_SUFFIXES = (".dng", ".nef", ".cr2", ".arw")
FIVEK_ID = re.compile(r"^(a\d{4})(?:[-_.]|$)", re.IGNORECASE)
FFHQ_ID = re.compile(r"^(\d{5})$")
FFHQR_SPLITS = {"train": range(0, 56000), "val": range(56000, 63000), "test": range(63000, 70000)}


def _index(sources: Sequence[Path], key: Callable[[str], str | None]) -> dict[str, tuple[str, Opener]]:
    """Key -> (suffix, opener) for the images of ``sources``; a key seen twice is refused with both names."""
    index: dict[str, tuple[str, Opener]] = {}
    where: dict[str, str] = {}
    for source in sources:
        for name, opener in archive_members(Path(source)):
            path = PurePosixPath(name)
            suffix = path.suffix.lower()
            if suffix in RAW_SUFFIXES:
                raise DataError(f"{source}: {name}: a raw file; render the photos to TIFF, PNG or JPEG first "
                                f"(the trainer reads decoded images only)")
            if suffix not in PAIR_SUFFIXES or path.name.startswith("."):
                continue
            k = key(path.stem)
            if k is None:
                continue
            if k in index:
                raise DataError(f"{source}: {name} and {where[k]} are both image {k}; keep one per source")
            index[k], where[k] = (suffix, opener), f"{source}: {name}"
    return index


def prepare_pairs(inputs: Sequence[Path], targets: Sequence[Path], out: str | Path,
                  key: Callable[[str], str | None], what: str) -> tuple[int, list[str]]:
    """Copy every key found in both ``inputs`` and ``targets`` to ``out/original`` and ``out/retouch``.

    Returns the number of pairs and the keys present on one side only. Nothing is written when no key
    pairs, or when ``out`` already holds pairs.
    """
    out = Path(out)
    first, second = _index(inputs, key), _index(targets, key)
    paired = sorted(first.keys() & second.keys())
    if not paired:
        raise DataError(f"{', '.join(map(str, inputs))}: no {what} image has a twin in "
                        f"{', '.join(map(str, targets))}")
    for folder in (out / "original", out / "retouch"):
        if folder.is_dir() and any(folder.iterdir()):
            raise DataError(f"{folder}: already holds files; choose an empty --out")
    for k in paired:
        copy_member(first[k][1], out / "original" / f"{k}{first[k][0]}")
        copy_member(second[k][1], out / "retouch" / f"{k}{second[k][0]}")
    return len(paired), sorted(first.keys() ^ second.keys())


def fivek_key(stem: str) -> str | None:
    match = FIVEK_ID.match(stem)
    return match.group(1).lower() if match else None


def ffhqr_key(split: str) -> Callable[[str], str | None]:
    wanted = FFHQR_SPLITS.get(split)

    def key(stem: str) -> str | None:
        match = FFHQ_ID.match(stem)
        if not match or (wanted is not None and int(match.group(1)) not in wanted):
            return None
        return match.group(1)

    return key


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m abpn_retouch.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", required=True)
    for name, target_help in (("fivek", "one expert's retouched photos (e.g. Expert C)"),
                              ("ffhqr", "FFHQR's retouched images (the part tars or their folders)")):
        d = sub.add_parser(name, help=f"{name} pairs -> <out>/original, <out>/retouch")
        d.add_argument("--input", type=Path, nargs="+", required=True, help="the original photos: folders or archives")
        d.add_argument("--target", type=Path, nargs="+", required=True, help=target_help)
        d.add_argument("--out", type=Path, required=True, help="dataset folder to write")
        if name == "ffhqr":
            d.add_argument("--split", choices=(*FFHQR_SPLITS, "all"), default="all",
                           help="FFHQR's image-number range to keep (default: all)")
    args = p.parse_args(argv)
    key = fivek_key if args.dataset == "fivek" else ffhqr_key(args.split)
    count, unpaired = prepare_pairs(args.input, args.target, args.out, key, args.dataset)
    if unpaired:
        print(f"left out {len(unpaired)} image(s) found on one side only, first: {unpaired[0]}")
    print(f"{count} pairs -> {args.out}/original, {args.out}/retouch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
