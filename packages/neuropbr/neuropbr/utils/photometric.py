"""Classical photometric stereo for the renderer's three views: a normal map without learning.

The three views (``neuropbr.utils.render``) show the same surface, pixel for pixel, under three point
lights at known positions. Undo the sRGB encoding and the tone map, and a Lambertian pixel's radiance
under light ``k`` is ``albedo · s_k · n`` with ``s_k`` the light's direction scaled by its irradiance at
that pixel (``4 · intensity / distance²``): three equations, linear in ``b = albedo · n``, so per pixel
``b`` comes from (damped) least squares and the normal is ``b / |b|`` — the albedo cancels. The ambient term is taken out; the
renderer's specular lobe, its environment term, the Fresnel weight of the diffuse lobe and shadowed
(back-facing) lights are not modelled: where they matter (highlights, metals, very dark pixels) the
estimate is rough, and pixels with too little diffuse signal fall back to flat.

The light directions vary across the plane (point lights), so the estimate assumes the views cover the
whole rendered plane x, y ∈ [-1, 1], as the renderer's views (and ``make_dataset``'s crops, rendered
after cropping) do.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from neuropbr.utils.render import (
    _IRRADIANCE,
    _WHITE_POINT,
    AMBIENT,
    DEFAULT_SETUPS,
    ViewSetup,
    _plane_points,
    srgb_to_linear,
)

# Diffuse radiance below this (linear, white-normalised) is mostly noise and ambient: flat there.
MIN_SIGNAL = 1e-3
# The default lights are nearly coplanar (upper-left and lower-right lie on one diagonal, the flash near
# the camera), so one tilt direction is barely observed and plain least squares turns noise and specular
# light into tilts of tens of degrees. A ridge penalty on the tilt, relative to the lights' mean squared
# irradiance, pulls that direction towards flat: on held-out real materials 1.0 and 3.0 gave 6.38° (flat
# 6.89°), 0.3 gave 7.2°, 10 gave 6.6°, none 18°.
RIDGE = 1.0
AMBIENT_STEPS = 3


def inverse_tone_map(mapped: torch.Tensor) -> torch.Tensor:
    """Undo the renderer's Reinhard tone map ``m = r (1 + r / W²) / (1 + r)`` (``r ≥ 0``)."""
    m = mapped.clamp(0.0, 1.0)
    inv_w2 = 1.0 / _WHITE_POINT**2
    # r² / W² + r (1 - m) - m = 0, the positive root.
    return (-(1.0 - m) + torch.sqrt((1.0 - m) ** 2 + 4.0 * m * inv_w2)) / (2.0 * inv_w2)


def linear_radiance(views: torch.Tensor) -> torch.Tensor:
    """sRGB views in [0, 1] → the renderer's linear radiance (before tone mapping)."""
    return inverse_tone_map(srgb_to_linear(views))


def light_matrix(height: int, width: int, setups: Sequence[ViewSetup] = DEFAULT_SETUPS,
                 device=None, dtype=torch.float32) -> torch.Tensor:
    """``(H, W, V, 3)``: per pixel, each light's unit direction times its Lambertian irradiance factor."""
    p = _plane_points(height, width, device, dtype)
    rows = []
    for s in setups:
        light = torch.tensor(s.light, device=device, dtype=dtype)[:, None, None]
        to_light = light - p
        dist2 = (to_light**2).sum(dim=0, keepdim=True)
        # Diffuse radiance = albedo / π · irradiance · n·l, irradiance = intensity · _IRRADIANCE / d².
        scale = s.intensity * _IRRADIANCE / math.pi / dist2
        rows.append(to_light / dist2.sqrt() * scale)
    return torch.stack(rows, dim=0).permute(2, 3, 0, 1)


@functools.lru_cache(maxsize=8)
def _solve_matrix(height: int, width: int, setups: tuple[ViewSetup, ...], ridge: float) -> torch.Tensor:
    """``(H, W, 3, V)``: per pixel, the damped least-squares solve ``(SᵀS + ridge·m·D)⁻¹ Sᵀ``.

    It depends on the size alone, so it is computed once per size (and is a constant to tracers).
    """
    # Double precision: SᵀS is nearly singular where the lights are nearly coplanar.
    s = light_matrix(height, width, setups, torch.device("cpu"), torch.float64)  # (H, W, V, 3)
    st = s.transpose(-1, -2)
    sts = st @ s
    damp = torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=s.dtype))
    scale = sts.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
    return torch.linalg.pinv(sts + ridge * scale * damp) @ st


def photometric_stereo(views: torch.Tensor, setups: Sequence[ViewSetup] = DEFAULT_SETUPS,
                       ridge: float = RIDGE, min_signal: float = MIN_SIGNAL) -> torch.Tensor:
    """Unit normals ``(B, 3, H, W)`` (OpenGL tangent space) from views ``(B, V, 3, H, W)`` in [0, 1] sRGB.

    ``V`` must equal ``len(setups)`` (three for the default). Lambertian least squares per pixel on the
    views' grey level (the mean of the linear RGB), the ambient term ``AMBIENT · albedo`` taken out by a
    few fixed-point steps, and the tilt damped by ``ridge`` (see ``RIDGE``); an unbatched
    ``(V, 3, H, W)`` gives ``(3, H, W)``.
    """
    if views.dim() == 4:
        return photometric_stereo(views[None], setups, ridge, min_signal)[0]
    if views.dim() != 5 or views.shape[1] != len(setups) or views.shape[2] != 3:
        raise ValueError(f"expected views (B, {len(setups)}, 3, H, W), got {tuple(views.shape)}")
    _, _, _, h, w = views.shape
    work = views.detach().float()
    grey = linear_radiance(work).mean(dim=2)  # (B, V, H, W)
    solve = _solve_matrix(h, w, tuple(setups), float(ridge)).to(work.device, work.dtype)[None]  # (1, H, W, 3, V)
    intensity = grey.permute(0, 2, 3, 1)[..., None]  # (B, H, W, V, 1)
    scaled = (solve @ intensity)[..., 0]
    # |b| is the albedo: the ambient term it adds to every view is subtracted, and b solved again.
    for _ in range(AMBIENT_STEPS):
        scaled = (solve @ (intensity - AMBIENT * scaled.norm(dim=-1, keepdim=True)[..., None]))[..., 0]
    scaled = scaled.permute(0, 3, 1, 2)  # (B, 3, H, W)
    length = scaled.norm(dim=1, keepdim=True)
    flat = torch.zeros_like(scaled)
    flat[:, 2] = 1.0
    ok = (length > min_signal) & (scaled[:, 2:3] > 0)
    normal = torch.where(ok, scaled / length.clamp_min(1e-12), flat)
    return normal.to(views.dtype)
