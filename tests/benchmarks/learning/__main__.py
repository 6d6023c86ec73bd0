"""Train a package's recommended recipe for a few minutes, evaluate it on held-out images against the
trivial baseline and the classical method, and write ``learning.json``, ``learning.md``,
``learning_curve.png`` and ``samples.png`` to ``--out``.

Usage (from the repository root)::

    uv run --all-packages --all-extras --group benchmark python -m tests.benchmarks.learning deblur_unet \
        --train-dir data/deblur/train --eval-dir data/deblur/eval --minutes 10 --out learning/deblur_unet

``--train-dir`` and ``--eval-dir`` hold the same layout (for example ``blur/`` and ``sharp/`` for
deblurring); ``python -m tests.benchmarks.learning.split`` makes both from one folder. Exits 0 whatever
the result: the numbers speak.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from tests.benchmarks.learning.core import run_benchmark

PACKAGES = ("deblur_unet", "abpn_retouch", "alphagan_matting", "gansformer_inpaint", "neuropbr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.learning", description=__doc__.split("\n\n")[0])
    parser.add_argument("package", choices=PACKAGES)
    parser.add_argument("--train-dir", type=Path, required=True)
    parser.add_argument("--eval-dir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall time of training")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the run already in --out again (after an interrupted evaluation)")
    args = parser.parse_args(argv)
    for flag, folder in (("--train-dir", args.train_dir), ("--eval-dir", args.eval_dir)):
        if not folder.is_dir():
            parser.error(f"{flag} {folder}: not a folder")
    adapter = importlib.import_module(f"tests.benchmarks.learning.{args.package}").ADAPTER
    run_benchmark(adapter, args.train_dir, args.eval_dir, args.minutes, args.out, args.device,
                  train=not args.evaluate_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
