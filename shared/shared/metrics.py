"""PSNR and SSIM of image batches: one contract for every package.

* Inputs: ``pred`` and ``target`` of one shape, ``(N, C, H, W)`` or ``(C, H, W)`` (taken as ``N = 1``),
  any real dtype, values on a scale whose peak-to-peak span is ``data_range`` (1.0 for 0..1 images,
  255.0 for 0..255). A package working on another range (e.g. -1..1) converts first.
* Outputs: a float32 tensor ``(N,)`` of per-image values on the inputs' device, never a Python
  float and never a batch mean. The mean over a batch or a set is the caller's ``.mean()`` (or a
  running sum of the per-image values), so uneven last batches and distributed sums stay exact.
* :func:`psnr` is ``10·log10(data_range² / MSE)`` over all pixels and channels of each image, capped
  at :data:`PSNR_CAP` = 100 dB: identical images give 100, not ``inf``, so set means stay finite.
* :func:`ssim` is Wang et al. (2004): 11×11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
  population (co)variances, per channel, averaged over the *valid* region (pixels whose window lies
  inside the image) and the channels, as Wang's reference code and skimage's
  ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` do; images need
  ``H, W >= 11``. (torchmetrics' ``structural_similarity_index_measure`` also averages the 5-pixel
  border it computes on a reflected image, so its value differs slightly.) It is differentiable, so
  ``1 - ssim(...).mean()`` also serves as a loss.
* :func:`ssim_map` is the per-pixel SSIM ``(N, C, H, W)`` at full size, the border windows seeing a
  reflected image (torchmetrics' ``return_full_image`` map), for SSIM over a region such as an
  inpainting hole; :func:`ssim` is its mean without that border.

Both run in float32 with autocast off: half precision loses the small variances SSIM divides by.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PSNR_CAP = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

__all__ = ["PSNR_CAP", "psnr", "ssim", "ssim_map"]


def _as_batch(pred: torch.Tensor, target: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    elif pred.dim() != 4:
        raise ValueError(f"{name}: expected (N, C, H, W) or (C, H, W) images, got shape {tuple(pred.shape)}")
    if pred.is_complex() or target.is_complex():
        raise ValueError(f"{name}: complex inputs are not images")
    return pred, target


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image, ``(N,)``, capped at :data:`PSNR_CAP`."""
    pred, target = _as_batch(pred, target, "psnr")
    diff = pred.float() - target.float()
    # float64 accumulation: a float32 mean over megapixels drifts at high PSNR.
    mse = diff.square().flatten(1).mean(dim=1, dtype=torch.float64)
    value = 10.0 * torch.log10(float(data_range) ** 2 / mse)
    return value.clamp(max=PSNR_CAP).float()


def _gaussian_1d(device: torch.device) -> torch.Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def ssim_map(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM ``(N, C, H, W)`` (reflected border windows); see the module docstring."""
    pred, target = _as_batch(pred, target, "ssim")
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}×{SSIM_WINDOW}, got "
                         f"{pred.shape[-1]}×{pred.shape[-2]}")
    with torch.autocast(pred.device.type, enabled=False):
        x, y = pred.float(), target.float()
        channels = x.shape[1]
        # float64 convolutions are ~10× slower on CPU, so stay in float32 but centre the data: the
        # (co)variances E[x²] − E[x]² are shift-invariant and cancel less near zero. The means are
        # shifted back for the luminance term; the result does not depend on the offset.
        offset = ((x + y) / 2).mean(dim=(2, 3), keepdim=True).detach()
        x, y = x - offset, y - offset
        stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
        pad = SSIM_WINDOW // 2
        stacked = F.pad(stacked, (pad, pad, pad, pad), mode="reflect")
        g = _gaussian_1d(x.device)
        groups = stacked.shape[1]
        # Separable: two 11-tap passes instead of one 121-tap 2-D window.
        blurred = F.conv2d(stacked, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
        blurred = F.conv2d(blurred, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
        mu_x, mu_y, e_xx, e_yy, e_xy = blurred.split(channels, dim=1)
        var_x = e_xx - mu_x**2
        var_y = e_yy - mu_y**2
        cov = e_xy - mu_x * mu_y
        mu_x, mu_y = mu_x + offset, mu_y + offset
        c1 = (SSIM_K1 * float(data_range)) ** 2
        c2 = (SSIM_K2 * float(data_range)) ** 2
        return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity of each image, ``(N,)``, in [-1, 1] (1 = identical); differentiable."""
    smap = ssim_map(pred, target, data_range)
    pad = SSIM_WINDOW // 2
    return smap[..., pad:-pad, pad:-pad].flatten(1).mean(dim=1)
