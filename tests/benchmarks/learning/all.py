"""Every package's learning benchmark on the project's fixed split of the real sample images, one after
the other (each alone on the machine), then one summary.

Usage (from the repository root; DATA holds deblur/, retouch/, matting/, inpainting/, pbr/)::

    uv run --all-packages --all-extras --group benchmark python -m tests.benchmarks.learning.all \
        --data DATA --minutes 10 --out learning [--packages deblur_unet neuropbr] [--device auto]

Writes ``<out>/splits/<category>/{train,eval}``, ``<out>/<package>/`` (see ``python -m
tests.benchmarks.learning``) and ``<out>/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.benchmarks.learning.__main__ import PACKAGES
from tests.benchmarks.learning.__main__ import main as run_one
from tests.benchmarks.learning.split import split

# category folder, images held out for evaluation (by name), folders used on both sides
SPLITS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "deblur_unet": ("deblur", ("GOPR0384_11_02_f00698_avg8", "GOPR0374_11_00_f01195_avg8",
                               "GOPR0410_11_00_f01193_avg8"), ()),
    "abpn_retouch": ("retouch", ("fivek_a4232", "fivek_a3232", "ffhqr_teaser_2"), ()),
    "alphagan_matting": ("matting", ("GT02", "GT05", "GT09"), ("bg",)),
    "gansformer_inpaint": ("inpainting", ("celebahq_191300", "celebahq_196930", "celebahq_172559"), ()),
    "neuropbr": ("pbr", ("ambientcg_Rock053", "flighthelmet_LeatherParts"), ()),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.learning.all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--packages", nargs="+", choices=PACKAGES, default=list(PACKAGES))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    sections = []
    for package in args.packages:
        category, held_out, both = SPLITS[package]
        splits = args.out / "splits" / category
        split(args.data / category, splits, set(held_out), set(both))
        out = args.out / package
        run_one([package, "--train-dir", str(splits / "train"), "--eval-dir", str(splits / "eval"),
                 "--minutes", str(args.minutes), "--out", str(out), "--device", args.device])
        result = json.loads((out / "learning.json").read_text())
        sections.append((out / "learning.md").read_text()
                        + f"\nHeld out: {', '.join(held_out)}.\n\n"
                        + f"![learning curve]({package}/learning_curve.png)\n![samples]({package}/samples.png)\n")
        print(f"[learning] {package}: model {result['model']:.4g} vs {result['trivial_baseline']} "
              f"{result['baselines'][result['trivial_baseline']]:.4g}", file=sys.stderr)
    (args.out / "summary.md").write_text("# Learning benchmark\n\n" + "\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
