"""The four PBR maps: names, channel layout, value ranges and PNG encodings.

Convention used everywhere in the package (datasets, model outputs, losses, shards, files):

=========  ========  ==========================  ==========================================
map        channels  tensor values               PNG file
=========  ========  ==========================  ==========================================
albedo     3         sRGB colour in [0, 1]        RGB, as stored
roughness  1         linear in [0, 1]             8-bit grayscale
metallic   1         linear in [0, 1]             8-bit grayscale
normal     3         unit vectors in [-1, 1]      RGB = (n + 1) / 2, tangent space, OpenGL (+Y up)
=========  ========  ==========================  ==========================================

Stacked as one tensor the order is albedo, roughness, metallic, normal: 8 channels
(:func:`maps_to_tensor` / :func:`tensor_to_maps`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

MAP_NAMES: tuple[str, ...] = ("albedo", "roughness", "metallic", "normal")
MAP_CHANNELS: dict[str, int] = {"albedo": 3, "roughness": 1, "metallic": 1, "normal": 3}
NUM_MAP_CHANNELS = sum(MAP_CHANNELS.values())  # 8


def maps_to_tensor(maps: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate ``albedo, roughness, metallic, normal`` along the channel axis (``dim=-3``)."""
    return torch.cat([maps[name] for name in MAP_NAMES], dim=-3)


def tensor_to_maps(stacked: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split an 8-channel ``(..., 8, H, W)`` tensor into the four maps (views, no copies)."""
    if stacked.shape[-3] != NUM_MAP_CHANNELS:
        raise ValueError(f"expected {NUM_MAP_CHANNELS} channels, got shape {tuple(stacked.shape)}")
    out, start = {}, 0
    for name in MAP_NAMES:
        out[name] = stacked[..., start : start + MAP_CHANNELS[name], :, :]
        start += MAP_CHANNELS[name]
    return out


def normalize_normals(normal: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Unit length along the channel axis (``dim=-3``)."""
    return F.normalize(normal, dim=-3, eps=eps)


def decode_normal(encoded: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] → unit normal in [-1, 1]."""
    return normalize_normals(encoded * 2.0 - 1.0)


def encode_normal(normal: torch.Tensor) -> torch.Tensor:
    """Unit normal in [-1, 1] → RGB in [0, 1] as ``(n + 1) / 2``."""
    return ((normalize_normals(normal) + 1.0) * 0.5).clamp(0.0, 1.0)


def maps_for_display(maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every map in [0, 1] for images and PNG files (the normal RGB-encoded)."""
    return {
        "albedo": maps["albedo"].clamp(0, 1),
        "roughness": maps["roughness"].clamp(0, 1),
        "metallic": maps["metallic"].clamp(0, 1),
        "normal": encode_normal(maps["normal"]),
    }


def resize_maps(maps: Mapping[str, torch.Tensor], size: tuple[int, int], mode: str = "bilinear") -> dict[str, torch.Tensor]:
    """Resize ``(B, C, H, W)`` maps to ``size``; normals are renormalised afterwards."""
    out = {}
    for name in MAP_NAMES:
        x = maps[name]
        if tuple(x.shape[-2:]) != tuple(size):
            kwargs = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=size, mode=mode, align_corners=False, **kwargs)
        out[name] = normalize_normals(x) if name == "normal" else x.clamp(0, 1)
    return out
