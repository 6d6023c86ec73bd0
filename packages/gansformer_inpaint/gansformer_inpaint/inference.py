"""Inpainting at any resolution with a trained generator.

Two modes:

* ``resize`` (default): image and mask are resized to the model's ``img_size``, the generator fills the
  hole, the fill is upsampled to full resolution and pasted into the full-resolution hole. Known pixels
  keep their full-resolution values exactly. Right for faces, where the model was trained on whole
  aligned faces at ``img_size``.
* ``tile``: overlapping ``img_size`` tiles at full resolution through :func:`shared.tiling.tiled_forward`
  (feathered blending). Keeps fine detail on large images with small holes, but each tile only sees its
  own context, so a hole larger than a tile cannot be filled from the whole face.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from gansformer_inpaint.config import Config
from gansformer_inpaint.dataloader.loader import (
    SUPPORTED_EXTENSIONS,
    check_folder_formats,
    file_conversion_notes,
    resize_image,
)
from gansformer_inpaint.dataloader.masks import resize_mask
from gansformer_inpaint.models import Generator, compose
from shared.checkpoint import CheckpointError, load_checkpoint
from shared.cli import Job, resolve_jobs, run_jobs
from shared.device import resolve_device
from shared.errors import DataError
from shared.images import pair_by_stem, read_image, save_image, to_tensor
from shared.tiling import tiled_forward

KIND = "gansformer_inpaint"


def load_generator(path: str | Path, device: torch.device) -> tuple[Generator, Config]:
    """The generator of a training checkpoint, in eval mode on ``device``."""
    state = load_checkpoint(path)
    if state.get("kind") != KIND or "generator" not in state.get("state", {}):
        raise CheckpointError(f"{path}: not a {KIND} training checkpoint (kind '{state.get('kind')}')")
    cfg = Config.from_dict(state.get("config", {}))
    gen = Generator(cfg.img_size, cfg.base_channels, cfg.latent_num, cfg.latent_dim, cfg.num_heads,
                    cfg.num_gansformer_blocks)
    try:
        gen.load_state_dict(state["state"]["generator"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: generator weights do not fit its config: {str(exc).splitlines()[0]}") from None
    return gen.to(device).eval(), cfg


def read_mask(path: Path) -> torch.Tensor:
    """(1, H, W) {0, 1} from a mask file: pixels >= 128 are holes."""
    return (to_tensor(read_image(path, mode="L")) >= 0.5).float()


@torch.no_grad()
def inpaint(gen: Generator, image: torch.Tensor, mask: torch.Tensor, mode: str = "resize",
            overlap: int = 64) -> torch.Tensor:
    """Fill ``mask`` (1, H, W) in ``image`` (3, H, W, values 0..1); returns (3, H, W) in 0..1.

    Pixels outside the hole are returned unchanged, bit for bit.
    """
    device = next(gen.parameters()).device
    size = gen.img_size
    x = (image * 2 - 1)[None].to(device)
    m = mask[None].to(device)
    if mode == "tile":
        def fn(tiles: torch.Tensor) -> torch.Tensor:
            return gen(tiles[:, :3], tiles[:, 3:])[0]

        fill = tiled_forward(fn, torch.cat([x, m], dim=1), tile_size=size, overlap=min(overlap, size // 2),
                             batch_size=4)
    else:
        small_x = resize_image(x, size)
        small_m = resize_mask(m[0], size)[None]
        raw, _ = gen(small_x, small_m)
        fill = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False)
    out = compose(x, fill, m)[0]
    result = (out + 1) / 2
    # Known pixels: copy the input itself, so no [-1,1] round trip can change a bit.
    return torch.where(mask.to(device).bool().expand_as(result), result.clamp(0, 1), image.to(device)).cpu()


def _masks(image: Path, mask: Path) -> dict[Path, Path]:
    """Each image's mask: folders paired by stem (an unpaired file stops the run before any work)."""
    if image.is_dir() != mask.is_dir() and mask.exists():
        raise DataError(f"{mask}: --image and --mask must both be files or both be folders")
    if image.is_dir():
        check_folder_formats(image)
        check_folder_formats(mask)
        return dict(pair_by_stem(image, mask, SUPPORTED_EXTENSIONS))
    for path in (image, mask):
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{path}: unsupported image format '{path.suffix}'; use one of "
                            f"{', '.join(SUPPORTED_EXTENSIONS)}")
    return {image: mask}


def run_inference(checkpoint: str, image: str, mask: str, output: str, mode: str = "resize", overlap: int = 64,
                  device: str = "auto") -> list[Path]:
    """File or folder in, PNG(s) out at full resolution; returns the written paths."""
    image_p = Path(image)
    jobs = resolve_jobs(image_p, output, extensions=SUPPORTED_EXTENSIONS)
    masks = _masks(image_p, Path(mask))
    for line in file_conversion_notes([job.source for job in jobs], [masks[j.source] for j in jobs if j.source in masks]):
        print(f"note: {line}", file=sys.stderr)
    gen, _ = load_generator(checkpoint, resolve_device(device))

    def process(job: Job) -> list[Path]:
        img = to_tensor(read_image(job.source))
        mask_path = masks[job.source]
        m = read_mask(mask_path)
        if m.shape[-2:] != img.shape[-2:]:
            raise DataError(f"{mask_path}: mask is {m.shape[-1]}x{m.shape[-2]} but image {job.source} is "
                            f"{img.shape[-1]}x{img.shape[-2]}")
        return [save_image(job.target, inpaint(gen, img, m, mode, overlap))]

    return run_jobs(jobs, process)
