"""``model.py`` as a script: shapes and parameter counts of the ABPN for a given patch size."""

from __future__ import annotations

import argparse

import torch

from abpn_retouch.model import ABPN, ABPNConfig
from shared.errors import ConfigError, cli_entry


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print ABPN shapes and parameter counts.")
    parser.add_argument("--patch-size", type=int, default=512, help="side of the dummy input (default: 512)")
    parser.add_argument("--pyramid-levels", type=int, default=1, help="pyramid levels (default: 1)")
    parser.add_argument("--base-channels", type=int, default=32, help="LRNet width (default: 32)")
    args = parser.parse_args(argv)
    if args.patch_size < 8 or args.pyramid_levels < 1:
        raise ConfigError("--patch-size must be >= 8 and --pyramid-levels >= 1")
    model = ABPN(ABPNConfig(pyramid_levels=args.pyramid_levels, base_channels=args.base_channels)).eval()
    with torch.inference_mode():
        out, mask = model(torch.rand(1, 3, args.patch_size, args.patch_size))
    low = args.patch_size // 2**args.pyramid_levels
    print(f"input          (1, 3, {args.patch_size}, {args.patch_size})")
    print(f"LRNet input    (1, 3, {low}, {low})")
    print(f"output         {tuple(out.shape)}")
    print(f"mask logits    {tuple(mask.shape)}")
    for name, module in model.named_children():
        print(f"{name:14s} {sum(p.numel() for p in module.parameters()):,} parameters")
