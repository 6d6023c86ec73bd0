"""Inference: image(s) + trimap(s) → alpha PNGs at full resolution, plus a composite preview."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from alphagan_matting.cfg_loader import config_from_dict
from alphagan_matting.models import AlphaGenerator, apply_known_regions
from alphagan_matting.utils import TrimapNotes, build_generator, conversion_notes, read_trimap, trimap_to_unit
from shared.amp import PRECISIONS
from shared.checkpoint import CheckpointError, load_checkpoint
from shared.cli import Job, resolve_jobs, run_jobs
from shared.device import resolve_device
from shared.errors import DataError, UserError, cli_entry
from shared.images import list_images, read_image, save_image
from shared.tiling import tiled_forward


def load_generator(path: Path, device: torch.device) -> tuple[AlphaGenerator, list[float], list[float]]:
    """The generator and the normalisation stored in a training checkpoint."""
    state = load_checkpoint(path)
    if state.get("kind") != "alphagan_matting" or "generator" not in state.get("state", {}):
        raise CheckpointError(f"{path}: not an alphagan_matting training checkpoint (kind: {state.get('kind')})")
    try:
        cfg = config_from_dict(state["config"], source=str(path))
    except UserError as exc:
        raise CheckpointError(f"{path}: stored config is invalid: {exc}") from None
    generator = build_generator(cfg.model)
    try:
        generator.load_state_dict(state["state"]["generator"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: generator weights do not fit: {str(exc).splitlines()[0][:200]}") from None
    return generator.to(device).eval(), cfg.general.mean, cfg.general.std


def predict_alpha(generator: torch.nn.Module, image: np.ndarray, trimap: np.ndarray, mean, std, device,
                  tile_size: int = 512, overlap: int = 64, precision: str = "fp32") -> np.ndarray:
    """``(H, W)`` float alpha in 0..1 for an RGB float image and a uint8 trimap of the same size.

    Runs tile by tile so any resolution fits; the trimap's known regions are copied exactly.
    """
    img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    img = (img - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    tri = torch.from_numpy(trimap_to_unit(trimap))[None]
    x = torch.cat([img, tri], dim=0)[None].float()
    alpha = tiled_forward(lambda t: generator(t).float(), x, tile_size=tile_size, overlap=overlap, batch_size=2,
                          device=device, precision=precision)
    # Blending tiles could nudge the known values by a rounding error; re-impose them.
    alpha = apply_known_regions(alpha.clamp(0, 1), tri[None])
    return alpha[0, 0].numpy()


def _trimaps(image: Path, trimap: Path, jobs: list[Job]) -> dict[Path, Path]:
    """The trimap of each job's image, matched by stem; an image without one stops the run before any work."""
    if not image.is_dir():
        if not trimap.is_file():
            raise DataError(f"{trimap}: trimap file not found")
        return {image: trimap}
    if not trimap.is_dir():
        raise DataError(f"{trimap}: --image is a folder, so --trimap must be a folder too")
    by_stem = {p.stem: p for p in list_images(trimap)}
    for job in jobs:
        if job.source.stem not in by_stem:
            raise DataError(f"{job.source}: no trimap with stem '{job.source.stem}' in {trimap}")
    return {job.source: by_stem[job.source.stem] for job in jobs}


def parse_color(text: str) -> np.ndarray:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise UserError(f"--composite-color must be R,G,B with values 0..255, got '{text}'")
    return np.asarray(values, dtype=np.float32) / 255.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infer.py", description="Predict alpha mattes with a trained AlphaGAN.")
    p.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (latest.pth / best.pth)")
    p.add_argument("--image", type=Path, required=True, help="RGB image file or folder")
    p.add_argument("--trimap", type=Path, required=True, help="trimap file or folder (0/128/255; JPEG or resized ones are quantised; matched by stem)")
    p.add_argument("--output", type=Path, required=True,
                   help="alpha .png file (single image), else a folder of <name>.png")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--tile-size", type=int, default=512, help="tile side in pixels")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels")
    p.add_argument("--composite-color", default="0,255,0", help="R,G,B background of the preview composite")
    p.add_argument("--no-composite", action="store_true", help="skip the composite preview")
    return p


def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    if args.tile_size < 16 or not 0 <= args.overlap < args.tile_size:
        raise UserError(f"need --tile-size >= 16 and 0 <= --overlap < --tile-size, got {args.tile_size}/{args.overlap}")
    color = parse_color(args.composite_color)
    jobs = resolve_jobs(args.image, args.output)
    trimaps = _trimaps(args.image, args.trimap, jobs)
    # Images as float (16 bits kept), trimaps at 8 bits: the modes process() reads them in.
    for line in conversion_notes([("images", [job.source for job in jobs], "RGB", True),
                                  ("trimaps", [trimaps[job.source] for job in jobs], "L", False)]):
        print(f"note: {line}", file=sys.stderr)
    device = resolve_device(args.device)
    generator, mean, std = load_generator(args.checkpoint, device)
    notes = TrimapNotes()

    def process(job: Job) -> list[Path]:
        image = read_image(job.source, dtype="float32")
        trimap_path = trimaps[job.source]
        trimap = read_trimap(trimap_path, notes)
        if trimap.shape != image.shape[:2]:
            raise DataError(f"{trimap_path}: trimap is {trimap.shape[1]}x{trimap.shape[0]} but "
                            f"{job.source} is {image.shape[1]}x{image.shape[0]}")
        alpha = predict_alpha(generator, image, trimap, mean, std, device, args.tile_size, args.overlap,
                              args.precision)
        written = [save_image(job.target, alpha)]
        if not args.no_composite:
            preview = alpha[..., None] * image + (1 - alpha[..., None]) * color
            written.append(save_image(job.target.with_name(f"{job.target.stem}_composite.png"), preview))
        return written

    try:
        return run_jobs(jobs, process)
    finally:
        if notes.line():
            print(notes.line(), file=sys.stderr)


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    main(argv)
