"""Train ABPN on overlapping patches of large photo pairs (entry point at the spec's path).

Single process::

    uv run --package abpn_retouch trainer.py --image-dir /workspace/original --gt-dir /workspace/retouch/
    uv run --package abpn_retouch trainer.py --synthetic --num-epochs 1 --batch-size 1 --patch-size 256 --stride 192

Several GPUs (or CPU processes with gloo)::

    uv run torchrun --nproc_per_node 2 trainer.py --image-dir /workspace/original --gt-dir /workspace/retouch/

Resume exactly: ``trainer.py ... --resume dc_newarchnew/latest.pth``. All flags: ``trainer.py --help``.
"""

from abpn_retouch.train import cli

if __name__ == "__main__":
    cli()
