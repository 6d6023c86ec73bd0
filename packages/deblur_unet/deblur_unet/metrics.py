"""PSNR and SSIM on images in [0, 1] (``(B, C, H, W)`` tensors), per image.

SSIM follows Wang et al. (2004): an 11×11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
computed per channel over the valid region (no padding) and averaged, as ``skimage``'s
``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (the model's range) → [0, 1], clamped so PSNR/SSIM see displayable values."""
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for each image of the batch, ``(B,)``.

    Identical images give ``inf``; callers averaging over a set should expect that.
    """
    mse = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size).contiguous()


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity for each image of the batch, ``(B,)``, in [-1, 1] (1 = identical)."""
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"ssim expects two equal (B, C, H, W) tensors, got {tuple(prediction.shape)} "
                         f"and {tuple(target.shape)}")
    if min(prediction.shape[-2:]) < window_size:
        raise ValueError(f"ssim needs images of at least {window_size}×{window_size}, got "
                         f"{tuple(prediction.shape[-2:])}")
    x, y = prediction.double(), target.double()
    channels = x.shape[1]
    window = _gaussian_window(window_size, sigma, channels, x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).float()
