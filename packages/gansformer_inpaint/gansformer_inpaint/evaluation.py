"""Metrics over the hole: PSNR, SSIM, L1 (plus whole-image PSNR/SSIM), as JSON and a printed table."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from gansformer_inpaint.dataloader.loader import InpaintingDataset, conversion_notes
from gansformer_inpaint.dataloader.masks import derive_mask
from gansformer_inpaint.inference import inpaint, load_generator, read_mask
from shared.cli import report_metrics
from shared.device import resolve_device
from shared.images import read_image, save_image, to_tensor
from shared.metrics import PSNR_CAP, psnr, ssim, ssim_map


def hole_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``pred``/``target`` (3, H, W) in 0..1, ``mask`` (1, H, W) with 1 = hole."""
    m = mask[0].bool()
    has_hole = bool(m.any())
    # The hole's pixels as a one-row image, so PSNR is over them alone.
    hole_pred, hole_target = pred[:, m][None, :, None], target[:, m][None, :, None]
    # The full-size map (reflected border windows) so that holes touching the border count too.
    smap = ssim_map(pred, target)[0].mean(dim=0)
    return {
        "psnr_hole": psnr(hole_pred, hole_target).item() if has_hole else PSNR_CAP,
        "ssim_hole": float(smap[m].mean()) if has_hole else 1.0,
        "l1_hole": float((hole_pred - hole_target).abs().mean()) if has_hole else 0.0,
        "psnr": psnr(pred, target).item(),
        "ssim": ssim(pred, target).item(),
        "hole_fraction": float(m.float().mean()),
    }


def mean_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trivial baseline: the hole filled with the mean colour of the known pixels.

    ``image`` (..., 3, H, W) in 0..1, ``mask`` (..., 1, H, W) with 1 = hole; per image. An image with no
    known pixel is filled with mid-grey.
    """
    known = 1 - mask
    area = known.sum(dim=(-2, -1), keepdim=True)
    mean = (image * known).sum(dim=(-2, -1), keepdim=True) / area.clamp(min=1)
    mean = torch.where(area > 0, mean, torch.full_like(mean, 0.5))
    return image * known + mean * mask


def run_evaluation(checkpoint: str, data_root: str, output: str = "metrics.json", save_images: str | None = None,
                   mode: str = "resize", device: str = "auto") -> dict:
    """Inpaint every pair of ``data_root`` at full resolution and score it against its ground truth."""
    dev = resolve_device(device)
    gen, cfg = load_generator(checkpoint, dev)
    dataset = InpaintingDataset(data_root, cfg.img_size, cfg.mask_threshold)  # checks layout, sizes, formats
    for line in conversion_notes([dataset]):
        print(f"note: {line}", file=sys.stderr)
    per_image = {}
    for masked_path, gt_path, mask_path in dataset.items:
        masked, gt = read_image(masked_path), read_image(gt_path)
        mask = read_mask(mask_path) if mask_path is not None else \
            torch.from_numpy(derive_mask(masked, gt, cfg.mask_threshold))[None]
        pred = inpaint(gen, to_tensor(masked), mask, mode)
        per_image[masked_path.stem] = hole_metrics(pred, to_tensor(gt), mask)
        if save_images:
            save_image(Path(save_images) / f"{masked_path.stem}.png", pred)
    keys = ["psnr_hole", "ssim_hole", "l1_hole", "psnr", "ssim"]
    mean = {k: sum(v[k] for v in per_image.values()) / len(per_image) for k in keys}
    return report_metrics(output, mean, per_image, columns=keys,
                          extra={"checkpoint": str(checkpoint), "data_root": str(data_root), "mode": mode})
