"""Metrics over the hole: PSNR, SSIM, L1 (plus whole-image PSNR/SSIM), as JSON and a printed table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from gansformer_inpaint.dataloader.loader import InpaintingDataset
from gansformer_inpaint.dataloader.masks import derive_mask
from gansformer_inpaint.inference import inpaint, load_generator, read_mask
from shared.device import resolve_device
from shared.images import read_image, save_image, to_tensor


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, 11×11 Gaussian σ=1.5) of (C, H, W) images in 0..1, mean over C."""
    c1, c2 = 0.01**2, 0.03**2
    channels = a.shape[0]
    win = _gaussian_window().to(a.device).repeat(channels, 1, 1, 1)
    a, b = a[None].double(), b[None].double()
    pad = win.shape[-1] // 2

    def blur(x):
        return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), win, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s[0].mean(0).float()


def hole_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``pred``/``target`` (3, H, W) in 0..1, ``mask`` (1, H, W) with 1 = hole."""
    m = mask[0].bool()
    n = max(int(m.sum()), 1)
    diff = (pred - target)[:, m]
    mse_hole = float(diff.pow(2).mean()) if m.any() else 0.0
    mse_all = float((pred - target).pow(2).mean())
    smap = ssim_map(pred, target)
    return {
        "psnr_hole": _psnr(mse_hole),
        "ssim_hole": float(smap[m].mean()) if n and m.any() else 1.0,
        "l1_hole": float(diff.abs().mean()) if m.any() else 0.0,
        "psnr": _psnr(mse_all),
        "ssim": float(smap.mean()),
        "hole_fraction": float(m.float().mean()),
    }


def _psnr(mse: float) -> float:
    return 100.0 if mse <= 1e-10 else 10 * math.log10(1.0 / mse)


def run_evaluation(checkpoint: str, data_root: str, output: str = "metrics.json", save_images: str | None = None,
                   mode: str = "resize", device: str = "auto") -> dict:
    """Inpaint every pair of ``data_root`` at full resolution and score it against its ground truth."""
    dev = resolve_device(device)
    gen, cfg = load_generator(checkpoint, dev)
    dataset = InpaintingDataset(data_root, cfg.img_size, cfg.mask_threshold)  # checks layout, sizes, formats
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
    result = {"checkpoint": str(checkpoint), "data_root": str(data_root), "mode": mode, "count": len(per_image),
              "mean": mean, "per_image": per_image}
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, indent=2))
    print(f"{'image':<24}" + "".join(f"{k:>11}" for k in keys))
    for name, v in per_image.items():
        print(f"{name[:24]:<24}" + "".join(f"{v[k]:>11.4f}" for k in keys))
    print(f"{'mean':<24}" + "".join(f"{mean[k]:>11.4f}" for k in keys))
    print(f"wrote {output}")
    return result
