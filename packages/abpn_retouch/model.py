"""ABPN architecture (entry point at the spec's path): re-exports :mod:`abpn_retouch.model`.

Run it to print the layer table and output shapes for a patch::

    uv run --package abpn_retouch model.py --patch-size 2048 --pyramid-levels 1
    # torchrun is not needed here; training under DDP: uv run torchrun --nproc_per_node 2 trainer.py ...
"""

from abpn_retouch.model import ABPN, ABPNConfig, linear_light  # noqa: F401  (the spec imports these from model.py)
from abpn_retouch.summary import cli

if __name__ == "__main__":
    cli()
