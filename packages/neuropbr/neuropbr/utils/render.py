"""A small differentiable renderer: PBR maps of a flat material sample → shaded views.

Geometry: the material lies on the plane z = 0, covering x, y ∈ [-1, 1] (x right, y up, so the
OpenGL normal convention applies directly), seen straight on: pixel (row, col) of every view is the same
surface point, so views stay pixel-aligned and only the shading changes. Each view has a camera
position (for the view vector) and a point light.

Shading: Cook-Torrance with the GGX distribution, Smith-Schlick geometry and Schlick Fresnel, a
Lambertian diffuse lobe weighted by ``1 - metallic`` (F0 = lerp(0.04, albedo, metallic)) and a small
ambient term. Albedo is sRGB; shading happens in linear light and the result is tone-mapped (Reinhard
with a white point) and sRGB-encoded, so the views look like ordinary 8-bit renders. The three default
setups — a light from the upper left, a grazing light from the lower right, and a light beside the
camera (a "flash") — make albedo, roughness (highlight width), metallic (tinted highlight, no diffuse)
and normals (shading under different light directions) recoverable from the three views together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewSetup:
    """One view: camera and point-light positions (plane units) and the light's intensity."""

    camera: tuple[float, float, float]
    light: tuple[float, float, float]
    intensity: float = 1.0


DEFAULT_SETUPS: tuple[ViewSetup, ...] = (
    ViewSetup(camera=(0.0, 0.0, 2.5), light=(-1.0, 1.0, 1.5), intensity=1.0),
    ViewSetup(camera=(0.4, -0.3, 2.5), light=(1.4, -1.1, 0.9), intensity=1.0),
    ViewSetup(camera=(0.0, 0.0, 2.5), light=(0.25, 0.25, 2.4), intensity=1.0),
)
AMBIENT = 0.03
# A dim uniform environment: metals reflect it tinted by F0, so a metal's colour shows off-highlight too.
ENVIRONMENT = 0.2
# Irradiance scale: a light 2 units away gives ~π, so a white Lambertian surface facing it renders ~1.
_IRRADIANCE = math.pi * 4.0
_WHITE_POINT = 4.0


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(1e-8) ** (1 / 2.4) - 0.055)


def _plane_points(height: int, width: int, device, dtype) -> torch.Tensor:
    """``(3, H, W)`` surface positions of the pixels' centres."""
    ys = 1.0 - (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2.0
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2.0 - 1.0
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y, torch.zeros_like(x)])


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    # Faster than F.normalize over a strided channel axis on CPU.
    return x * torch.rsqrt((x * x).sum(dim=dim, keepdim=True).clamp_min(1e-12))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=-3, keepdim=True)


def render_view(maps: Mapping[str, torch.Tensor], setup: ViewSetup) -> torch.Tensor:
    """Shade maps ``(…, C, H, W)`` under one setup → sRGB image ``(…, 3, H, W)`` in [0, 1]."""
    albedo = srgb_to_linear(maps["albedo"])
    rough = maps["roughness"].clamp(0.03, 1.0)
    metal = maps["metallic"].clamp(0.0, 1.0)
    n = _unit(maps["normal"], -3)
    h_, w_ = albedo.shape[-2:]
    p = _plane_points(h_, w_, albedo.device, albedo.dtype)
    cam = torch.tensor(setup.camera, device=p.device, dtype=p.dtype)[:, None, None]
    light = torch.tensor(setup.light, device=p.device, dtype=p.dtype)[:, None, None]
    to_light = light - p
    dist2 = (to_light**2).sum(dim=0, keepdim=True)
    l_dir = to_light / dist2.sqrt()
    v_dir = _unit(cam - p, 0)
    h_dir = _unit(l_dir + v_dir, 0)
    n_dot_l = _dot(n, l_dir).clamp_min(0.0)
    n_dot_v = _dot(n, v_dir).clamp_min(1e-4)
    n_dot_h = _dot(n, h_dir).clamp_min(0.0)
    v_dot_h = (v_dir * h_dir).sum(dim=0, keepdim=True).clamp_min(0.0)

    alpha2 = (rough * rough) ** 2
    d = alpha2 / (math.pi * (n_dot_h**2 * (alpha2 - 1.0) + 1.0) ** 2)
    k = (rough + 1.0) ** 2 / 8.0
    g = (n_dot_l / (n_dot_l * (1 - k) + k)) * (n_dot_v / (n_dot_v * (1 - k) + k))
    f0 = 0.04 * (1.0 - metal) + albedo * metal
    fresnel = f0 + (1.0 - f0) * (1.0 - v_dot_h) ** 5
    specular = d * g * fresnel / (4.0 * n_dot_l * n_dot_v + 1e-4)
    diffuse = (1.0 - fresnel) * (1.0 - metal) * albedo / math.pi
    irradiance = setup.intensity * _IRRADIANCE / dist2 * n_dot_l
    radiance = (diffuse + specular) * irradiance + AMBIENT * albedo * (1.0 - metal) + ENVIRONMENT * f0 * (1.0 - 0.5 * rough)
    mapped = radiance * (1.0 + radiance / _WHITE_POINT**2) / (1.0 + radiance)
    return linear_to_srgb(mapped)


def render_views(maps: Mapping[str, torch.Tensor], setups: Sequence[ViewSetup] = DEFAULT_SETUPS) -> torch.Tensor:
    """Render every setup: maps ``(C, H, W)`` → ``(V, 3, H, W)``; maps ``(B, C, H, W)`` → ``(B, V, 3, H, W)``."""
    views = [render_view(maps, s) for s in setups]
    return torch.stack(views, dim=-4)


def dirty_views(views: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Capture artefacts for "dirty" renders: exposure/white-balance jitter, blur, vignetting, dust, noise.

    ``views`` ``(V, 3, H, W)`` in [0, 1]; all randomness comes from ``generator`` (deterministic).
    """
    v, c, h, w = views.shape
    out = views.clone()

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    gain = 0.85 + 0.3 * rand(v, 1, 1, 1)
    balance = 0.93 + 0.14 * rand(v, c, 1, 1)
    out = out * gain * balance
    sigma = 0.4 + 0.8 * float(rand(1))
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=out.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    flat = out.reshape(v * c, 1, h, w)
    pad_mode = "reflect" if radius < min(h, w) else "replicate"
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=pad_mode), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode=pad_mode), kernel.view(1, 1, -1, 1))
    out = flat.reshape(v, c, h, w)
    ys = torch.linspace(-1, 1, h)[:, None]
    xs = torch.linspace(-1, 1, w)[None, :]
    out = out * (1.0 - 0.25 * float(rand(1)) * (xs**2 + ys**2) / 2.0)
    spots = (rand(v, 1, h, w) < 0.002).to(out.dtype)
    out = out * (1 - spots) + spots * (0.2 + 0.6 * rand(v, 1, 1, 1))
    out = out + (0.01 + 0.03 * float(rand(1))) * torch.randn(v, c, h, w, generator=generator)
    return out.clamp(0.0, 1.0)
