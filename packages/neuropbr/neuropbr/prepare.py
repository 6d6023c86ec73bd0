"""Turn downloaded PBR materials (ambientCG's zips or folders) into ``<out>/<material>/{albedo,roughness,metallic,normal}.png``.

ambientCG ships each material as ``<Asset>_<res>-<format>.zip`` holding ``<Asset>_<res>-<format>_Color.png``,
``_Roughness``, ``_NormalGL`` / ``_NormalDX`` and, for metals, ``_Metalness`` (PNG or JPEG). The
material is named by its asset id; a missing metalness map means a dielectric (metallic 0 is written
and said); a DirectX normal map (green down) is flipped to the OpenGL convention the renderer uses::

    uv run --package neuropbr python -m neuropbr.prepare ambientcg downloads/*.zip --out data/materials
    uv run --package neuropbr python -m neuropbr.utils.make_dataset data/materials data/pbr --size 256 --crops 24

(the second command is also the console script ``neuropbr-render``). Each source is a zip, a tar or a
folder; a folder of several unpacked materials works too.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from shared.archives import Opener, archive_members, read_member_image
from shared.errors import DataError, cli_entry
from shared.images import save_image

# <Asset>_<anything>_<Map>.<ext>; the asset id is what ambientCG's site and licence lines name.
MAP_FILE = re.compile(r"^([A-Za-z0-9]+)_.*_(Color|Roughness|Metalness|NormalGL|NormalDX)\.(png|jpe?g)$",
                      re.IGNORECASE)


def prepare_ambientcg(sources: Sequence[str | Path], out: str | Path) -> list[str]:
    """Write one material folder per asset found in ``sources``; returns the material names.

    A material needs its colour, roughness and a normal map; one that lacks any of them is refused by
    name (before anything is written), as is an ``out`` that already holds that material.
    """
    out = Path(out)
    materials: dict[str, dict[str, tuple[str, Opener]]] = {}
    for source in sources:
        for name, opener in archive_members(Path(source)):
            match = MAP_FILE.match(PurePosixPath(name).name)
            if match:
                asset, kind = match.group(1), match.group(2).lower()
                materials.setdefault(asset, {}).setdefault(kind, (name, opener))
    if not materials:
        raise DataError(f"{', '.join(map(str, sources))}: no <Asset>_..._Color/Roughness/NormalGL maps found "
                        f"(ambientCG PNG or JPEG downloads)")
    for asset, maps in sorted(materials.items()):
        missing = [k for k in ("color", "roughness") if k not in maps]
        if "normalgl" not in maps and "normaldx" not in maps:
            missing.append("NormalGL or NormalDX")
        if missing:
            raise DataError(f"{asset}: no {', '.join(missing)} map among {sorted(n for n, _ in maps.values())}")
        if (out / asset).exists():
            raise DataError(f"{out / asset}: already exists; choose an empty --out")
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        for asset, maps in sorted(materials.items()):
            albedo = read_member_image(*maps["color"], scratch, "RGB")
            rough = read_member_image(*maps["roughness"], scratch, "L")
            if "normalgl" in maps:
                normal = read_member_image(*maps["normalgl"], scratch, "RGB")
            else:  # DirectX stores +Y down: the OpenGL map has the green channel mirrored
                normal = read_member_image(*maps["normaldx"], scratch, "RGB")
                normal[..., 1] = 255 - normal[..., 1]
            if "metalness" in maps:
                metal = read_member_image(*maps["metalness"], scratch, "L")
            else:
                print(f"{asset}: no metalness map, a dielectric: metallic.png is 0")
                metal = np.zeros(albedo.shape[:2], np.uint8)
            for key, image in (("albedo", albedo), ("roughness", rough), ("metallic", metal), ("normal", normal)):
                save_image(out / asset / f"{key}.png", image)
    return sorted(materials)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuropbr.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", required=True)
    a = sub.add_parser("ambientcg", help="ambientCG zips/folders -> <out>/<material>/{albedo,...}.png")
    a.add_argument("sources", type=Path, nargs="+", help="material zips, tars or folders")
    a.add_argument("--out", type=Path, required=True, help="materials folder to write")
    args = p.parse_args(argv)
    names = prepare_ambientcg(args.sources, args.out)
    print(f"{len(names)} material(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
