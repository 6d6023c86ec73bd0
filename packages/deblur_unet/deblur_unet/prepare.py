"""Turn the GoPro download (``GOPRO_Large.zip``, or the folder it unpacks to) into flat blur/sharp pairs.

GoPro names its frames per sequence (``train/GOPR0372_07_00/blur/000047.png``), so one file name appears in
many sequences. Each pair becomes ``<split>/{blur,sharp}/<sequence>_<frame>.png``, unique within its split,
which the flat layout reads (and any tool that wants one folder of pairs)::

    uv run --package deblur_unet python -m deblur_unet.prepare gopro GOPRO_Large.zip --out data/gopro
    uv run --package deblur_unet train.py --data-dir data/gopro

Files are copied byte for byte (no re-encoding) straight out of the archive, which is never unpacked whole.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from shared.archives import Opener, archive_members, copy_member
from shared.errors import DataError, cli_entry

# <anything>/train|test/<sequence>/blur|blur_gamma|sharp/<frame>.png, as in GOPRO_Large.
MEMBER = re.compile(r"(?:^|/)(train|test)/([^/]+)/(blur|blur_gamma|sharp)/([^/]+\.png)$", re.IGNORECASE)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def prepare_gopro(source: str | Path, out: str | Path, blur_folder: str = "blur") -> dict[str, int]:
    """Copy GoPro's ``<split>/<sequence>/{blur_folder,sharp}`` pairs to ``out/<split>/{blur,sharp}``.

    ``blur_folder`` is ``blur`` (the blur averaged from linear frames, the usual benchmark) or
    ``blur_gamma``. Returns pairs per split. A frame without its twin is refused with its name, before
    anything is written; so is an ``out`` that already holds a split.
    """
    source, out = Path(source), Path(out)
    found: dict[tuple[str, str, str], dict[str, Opener]] = {}
    for name, opener in archive_members(source):
        match = MEMBER.search(name)
        if not match:
            continue
        split, sequence, kind, frame = match.groups()
        if kind.lower() not in (blur_folder, "sharp"):
            continue
        if not SAFE_NAME.match(sequence) or not SAFE_NAME.match(frame):
            raise DataError(f"{source}: {name}: unexpected characters in the sequence or frame name")
        found.setdefault((split.lower(), sequence, frame), {})["sharp" if kind.lower() == "sharp" else "blur"] = opener
    if not found:
        raise DataError(f"{source}: no train|test/<sequence>/{blur_folder}/*.png and sharp/*.png found "
                        f"(is this GOPRO_Large?)")
    for (split, sequence, frame), kinds in sorted(found.items()):
        if len(kinds) != 2:
            missing = "sharp" if "blur" in kinds else blur_folder
            raise DataError(f"{source}: {split}/{sequence}/{frame} has no {missing}/ twin")
    for split in {key[0] for key in found}:
        if any((out / split).rglob("*.png")):
            raise DataError(f"{out / split}: already holds images; choose an empty --out")
    counts: dict[str, int] = {}
    for (split, sequence, frame), kinds in sorted(found.items()):
        unique = f"{sequence}_{frame}"
        copy_member(kinds["blur"], out / split / "blur" / unique)
        copy_member(kinds["sharp"], out / split / "sharp" / unique)
        counts[split] = counts.get(split, 0) + 1
    return counts


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deblur_unet.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", required=True)
    g = sub.add_parser("gopro", help="GOPRO_Large.zip (or its folder) -> <out>/{train,test}/{blur,sharp}")
    g.add_argument("source", type=Path, help="GOPRO_Large.zip, a tar of it, or the unpacked folder")
    g.add_argument("--out", type=Path, required=True, help="dataset folder to write (train/ and test/ inside)")
    g.add_argument("--blur-folder", choices=("blur", "blur_gamma"), default="blur",
                   help="which of GoPro's blurred versions is the input (default: blur)")
    args = p.parse_args(argv)
    counts = prepare_gopro(args.source, args.out, args.blur_folder)
    print(", ".join(f"{split}: {n} pairs" for split, n in sorted(counts.items())) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
