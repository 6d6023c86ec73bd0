"""Matting metrics over the trimap's unknown region: SAD, MSE, Gradient and Connectivity errors.

Conventions of Rhemann et al. (CVPR 2009) as used for Composition-1k by Deep Image Matting's MATLAB
code and its Python ports (GCA-Matting, MatteFormer): alphas in 0..1, SAD, Gradient and Connectivity
are sums over unknown pixels divided by 1000; MSE is the mean over unknown pixels; the gradient uses
first-derivative-of-Gaussian filters with σ = 1.4; connectivity thresholds in steps of 0.1 with
4-connected components and the 0.15 tolerance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from alphagan_matting.schemas import Metrics

UNKNOWN_VALUE = 128


def _check(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.shape != trimap.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape}, gt {gt.shape}, trimap {trimap.shape}")


def _unknown(trimap: np.ndarray) -> np.ndarray:
    return trimap == UNKNOWN_VALUE


def sad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Sum of absolute differences over unknown pixels, /1000 (alphas in 0..1, trimap 0/128/255)."""
    _check(pred, gt, trimap)
    mask = _unknown(trimap)
    return float(np.abs(pred[mask] - gt[mask]).sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Mean squared error over unknown pixels (0 when there are none)."""
    _check(pred, gt, trimap)
    mask = _unknown(trimap)
    count = int(mask.sum())
    return float(((pred[mask] - gt[mask]) ** 2).sum() / count) if count else 0.0


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))


def _dgauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return -x * _gauss(x, sigma) / sigma**2


def gauss_gradient_kernels(sigma: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    """The MATLAB ``gaussgradient`` kernels: ``hx[i, j] = g(i)·g'(j)``, unit L2 norm; ``hy = hxᵀ``."""
    epsilon = 1e-2
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    hx = _gauss(u, sigma)[:, None] * _dgauss(u, sigma)[None, :]
    hx /= np.sqrt((hx**2).sum())
    return hx, hx.T.copy()


def gradient_error(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray, sigma: float = 1.4) -> float:
    """Sum over unknown pixels of ``(|∇α_p| - |∇α_g|)²``, /1000."""
    _check(pred, gt, trimap)
    hx, hy = gauss_gradient_kernels(sigma)

    def magnitude(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        gx = ndimage.convolve(a, hx, mode="nearest")
        gy = ndimage.convolve(a, hy, mode="nearest")
        return np.sqrt(gx**2 + gy**2)

    error = (magnitude(pred) - magnitude(gt)) ** 2
    return float(error[_unknown(trimap)].sum() / 1000.0)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(binary)  # default structure: 4-connectivity
    if count == 0:
        return np.zeros_like(binary, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def connectivity_error(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray, step: float = 0.1) -> float:
    """Rhemann et al.'s connectivity error, /1000.

    For each pixel, ``l`` is the highest threshold at which it still belongs to the largest
    4-connected component of both thresholded alphas; ``φ = 1 - d·[d ≥ 0.15]`` with ``d = α - l``;
    the error sums ``|φ_p - φ_g|`` over unknown pixels.
    """
    _check(pred, gt, trimap)
    pred = pred.astype(np.float64)
    gt = gt.astype(np.float64)
    n_steps = int(round(1.0 / step))
    thresholds = [i * step for i in range(n_steps + 1)]
    level = np.full(pred.shape, -1.0)
    for i in range(1, len(thresholds)):
        omega = _largest_component((pred >= thresholds[i]) & (gt >= thresholds[i]))
        newly_lost = (level == -1) & ~omega
        level[newly_lost] = thresholds[i - 1]
    level[level == -1] = 1.0
    pred_d, gt_d = pred - level, gt - level
    pred_phi = 1 - pred_d * (pred_d >= 0.15)
    gt_phi = 1 - gt_d * (gt_d >= 0.15)
    return float(np.abs(pred_phi - gt_phi)[_unknown(trimap)].sum() / 1000.0)


def compute_metrics(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> Metrics:
    """All four metrics; ``pred``/``gt`` in 0..1 (floats), ``trimap`` uint8 0/128/255."""
    return Metrics(sad=sad(pred, gt, trimap), mse=mse(pred, gt, trimap),
                   grad=gradient_error(pred, gt, trimap), conn=connectivity_error(pred, gt, trimap))
