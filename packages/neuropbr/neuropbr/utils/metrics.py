"""Evaluation metrics of predicted PBR maps: per-map PSNR / SSIM / MAE and normal-angle statistics."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from neuropbr.losses.losses import normal_angle
from neuropbr.maps import MAP_NAMES, encode_normal
from shared.metrics import psnr, ssim

ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
_BINS = 1800  # 0.1° histogram bins for the median


def _display(name: str, x: torch.Tensor) -> torch.Tensor:
    # Normals are compared in their [0, 1] RGB encoding for PSNR/SSIM/MAE, like the PNG files.
    return encode_normal(x) if name == "normal" else x.float().clamp(0, 1)


class MetricAccumulator:
    """Accumulate metrics over batches (per-image means weighted by batch size; angle histogram)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.angle_hist = torch.zeros(_BINS, dtype=torch.float64)
        self.angle_pixels = 0

    def update(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> None:
        batch = pred["albedo"].shape[0]
        for name in MAP_NAMES:
            p, t = _display(name, pred[name]), _display(name, target[name])
            # Sums of per-image values (PSNR capped at 100 dB): compute() divides by the image count.
            self._add(f"psnr_{name}", float(psnr(p, t).sum()))
            self._add(f"ssim_{name}", float(ssim(p, t).sum()))
            self._add(f"mae_{name}", float((p - t).abs().flatten(1).mean(dim=1).sum()))
        angles = torch.rad2deg(normal_angle(pred["normal"], target["normal"])).flatten().double().cpu()
        self.angle_hist += torch.histc(angles, bins=_BINS, min=0.0, max=180.0)
        self.angle_pixels += angles.numel()
        self._add_total("angle_sum", float(angles.sum()))
        self._add_total("angle_sq_sum", float((angles**2).sum()))
        for t in ANGLE_THRESHOLDS:
            self._add_total(f"angle_below_{t}", float((angles < t).sum()))
        self.count += batch

    def _add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    def _add_total(self, key: str, value: float) -> None:
        self.sums["_" + key] = self.sums.get("_" + key, 0.0) + value

    def compute(self) -> dict[str, float]:
        """Mean of every metric, overall means, and normal-angle mean/median/RMSE/% below thresholds."""
        if self.count == 0:
            return {}
        out = {k: v / self.count for k, v in self.sums.items() if not k.startswith("_")}
        for metric in ("psnr", "ssim", "mae"):
            out[f"{metric}_mean"] = sum(out[f"{metric}_{n}"] for n in MAP_NAMES) / len(MAP_NAMES)
        n = max(self.angle_pixels, 1)
        out["normal_angle_mean"] = self.sums["_angle_sum"] / n
        out["normal_angle_rmse"] = (self.sums["_angle_sq_sum"] / n) ** 0.5
        cdf = torch.cumsum(self.angle_hist, 0)
        median_bin = int(torch.searchsorted(cdf, torch.tensor(n / 2.0, dtype=torch.float64)))
        out["normal_angle_median"] = (median_bin + 0.5) * 180.0 / _BINS
        for t in ANGLE_THRESHOLDS:
            out[f"normal_within_{t}"] = 100.0 * self.sums[f"_angle_below_{t}"] / n
        return out


def compute_metrics(pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Metrics of one batch (see :class:`MetricAccumulator`)."""
    acc = MetricAccumulator()
    acc.update(pred, target)
    return acc.compute()
