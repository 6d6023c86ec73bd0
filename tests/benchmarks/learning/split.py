"""Split one data folder into ``train/`` and ``eval/`` with the same layout, by name.

A file goes to ``eval/`` when its name (without extension) or one of its folders' names is listed in
``--eval``; everything else trains. Folders listed in ``--both`` (backgrounds for compositing, say) go
to both sides, since they are not what is evaluated. Files are linked, not copied, where the system
allows it.

Usage::

    python -m tests.benchmarks.learning.split DATA/deblur OUT --eval GOPR0384_11_02_f00698_avg8 ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def split(source: Path, out: Path, eval_names: set[str], both: set[str]) -> dict[str, list[str]]:
    sides: dict[str, list[str]] = {"train": [], "eval": []}
    found = set()
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name.lower().startswith("readme"):
            continue
        rel = path.relative_to(source)
        names = {part for part in rel.parent.parts} | {path.stem}
        hits = names & eval_names
        found |= hits
        targets = ["train", "eval"] if names & both else ["eval"] if hits else ["train"]
        for side in targets:
            dest = out / side / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            try:
                os.symlink(path.resolve(), dest)
            except OSError:
                shutil.copy2(path, dest)
            sides[side].append(str(rel))
    missing = eval_names - found
    if missing:
        raise SystemExit(f"{source}: no file named {', '.join(sorted(missing))}")
    return sides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.learning.split", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--eval", nargs="+", required=True, metavar="NAME")
    parser.add_argument("--both", nargs="*", default=[], metavar="FOLDER")
    args = parser.parse_args(argv)
    sides = split(args.source, args.out, set(args.eval), set(args.both))
    for side, files in sides.items():
        print(f"{side}: {len(files)} files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
