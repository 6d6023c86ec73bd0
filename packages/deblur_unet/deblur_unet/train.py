"""``deblur-train``: parse flags, train (see :mod:`deblur_unet.trainer`)."""

from __future__ import annotations

import json
import sys

from deblur_unet.config import parse_config
from deblur_unet.trainer import train
from shared.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> int:
    summary = train(parse_config(argv))
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
