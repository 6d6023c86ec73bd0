"""Equalised-learning-rate layers (Karras et al., StyleGAN/StyleGAN2).

The spec's learning rate 0.002 is StyleGAN2's, and it is only a sane Adam step because StyleGAN2 stores
weights as N(0, 1) and multiplies them by ``1/sqrt(fan_in)`` at run time: Adam moves every stored weight
by about ``lr``, so the *effective* weight moves by ``lr/sqrt(fan_in)``. With ordinary He-initialised
layers the same 0.002 moves a 3×3×512 conv's weights by ~5 % of their scale per step, which is what
blew the original up (see README, "Why it did not converge").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EqualConv2d(nn.Module):
    """Conv2d whose weight is scaled by ``gain/sqrt(fan_in)`` at run time."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, gain: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = gain / math.sqrt(in_ch * kernel * kernel)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualConvTranspose2d(nn.Module):
    """ConvTranspose2d with an equalised learning rate (fan-in of the equivalent conv)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 4, stride: int = 2, padding: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_ch, out_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # Each output pixel of a stride-s transposed conv sees in_ch * (k/s)^2 inputs.
        self.scale = 1.0 / math.sqrt(in_ch * (kernel / stride) ** 2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    """Linear layer with an equalised learning rate."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class ConvAct(nn.Module):
    """Equalised conv + LeakyReLU(0.2) scaled by sqrt(2) to keep unit variance (StyleGAN's ``lrelu``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = EqualConv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), 0.2) * math.sqrt(2.0)
