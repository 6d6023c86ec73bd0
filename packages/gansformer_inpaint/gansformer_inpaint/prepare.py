"""Turn CelebA-HQ faces and a set of hole masks into the trainer's layout.

Writes, for every face, ``<out>/ground_truth/<name>.png`` (the face at ``--size``), ``<out>/mask/<name>.png``
(255 = hole, 0 = keep) and ``<out>/extracted/<name>.png`` (the face with its hole painted white), the
masks dealt to the faces in a seeded order and reused when there are fewer masks than faces::

    uv run --package gansformer_inpaint python -m gansformer_inpaint.prepare celebahq \
        --images CelebAMask-HQ.zip --masks irregular_masks.zip --out dataset/celeba_hq_256 --size 256

Both sources are folders or archives (zip, tar), searched recursively for images. Masks whose holes are
black on white are turned around with ``--invert-masks``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from shared.archives import Opener, archive_members, read_member_image
from shared.errors import DataError, cli_entry
from shared.images import save_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _images(source: Path) -> list[tuple[str, Opener]]:
    found = sorted((name, opener) for name, opener in archive_members(source)
                   if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
                   and not PurePosixPath(name).name.startswith("."))
    if not found:
        raise DataError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return found


def square(image: np.ndarray, size: int, resample: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size``² (CelebA-HQ is square already: resize only)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    cropped = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    return np.asarray(cropped.resize((size, size), resample))


def prepare_celebahq(images: str | Path, masks: str | Path, out: str | Path, size: int = 256, seed: int = 0,
                     invert_masks: bool = False, limit: int | None = None) -> int:
    """Write ``ground_truth/``, ``mask/`` and ``extracted/`` under ``out``; returns the number of faces."""
    if size < 16:
        raise DataError(f"--size {size}: too small (min 16)")
    out = Path(out)
    for folder in ("ground_truth", "mask", "extracted"):
        if (out / folder).is_dir() and any((out / folder).iterdir()):
            raise DataError(f"{out / folder}: already holds files; choose an empty --out")
    faces, holes = _images(Path(images)), _images(Path(masks))
    if limit:
        faces = faces[:limit]
    stems = [PurePosixPath(name).stem for name, _ in faces]
    if len(set(stems)) != len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise DataError(f"{images}: two images named {twice}; the layout pairs files by name")
    order = np.random.default_rng(seed).permutation(len(holes))
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        for i, ((name, opener), stem) in enumerate(zip(faces, stems, strict=True)):
            face = square(read_member_image(name, opener, scratch, "RGB"), size, Image.Resampling.LANCZOS)
            mask_name, mask_opener = holes[order[i % len(holes)]]
            mask = square(read_member_image(mask_name, mask_opener, scratch, "L"), size, Image.Resampling.NEAREST) >= 128
            hole = ~mask if invert_masks else mask
            if not hole.any():
                raise DataError(f"{mask_name}: no hole at {size}x{size} (255 = hole; black holes need --invert-masks)")
            extracted = face.copy()
            extracted[hole] = 255
            save_image(out / "ground_truth" / f"{stem}.png", face)
            save_image(out / "mask" / f"{stem}.png", hole.astype(np.uint8) * 255)
            save_image(out / "extracted" / f"{stem}.png", extracted)
    return len(faces)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gansformer_inpaint.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", required=True)
    c = sub.add_parser("celebahq", help="faces + hole masks -> ground_truth/, mask/, extracted/")
    c.add_argument("--images", type=Path, required=True, help="CelebA-HQ faces: a folder or an archive")
    c.add_argument("--masks", type=Path, required=True, help="hole masks: a folder or an archive")
    c.add_argument("--out", type=Path, required=True, help="dataset folder to write (the trainer's --data-root)")
    c.add_argument("--size", type=int, default=256, help="side of the written images (default 256, the spec's)")
    c.add_argument("--seed", type=int, default=0, help="seed of the mask order")
    c.add_argument("--invert-masks", action="store_true", help="the masks' holes are black (0), not white")
    c.add_argument("--limit", type=int, default=None, help="only the first N faces (by name)")
    args = p.parse_args(argv)
    count = prepare_celebahq(args.images, args.masks, args.out, args.size, args.seed, args.invert_masks, args.limit)
    print(f"{count} faces -> {args.out}/ground_truth, mask, extracted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
