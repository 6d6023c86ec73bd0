"""Student B: MobileNetV3-Large encoder + ConvAttn bottleneck with a Pre-computed Large Kernel (PLK).

After ESC ("Emulating Self-attention with Convolution"): attention's long range comes from one large
17×17 kernel shared by all ConvAttn blocks, applied to a slice of the channels, and its input dependence
from a cheap dynamic branch. Everything is convolution, so memory grows linearly with the pixel count
(no N×N attention matrix), which is what lets the student run at 1024² on the Neural Engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuropbr.student.blocks import SKIP_CHANNELS, MultiViewEncoder, PBRHeads, SkipDecoder, SRHead
from neuropbr.student.config import StudentModelConfig


class PrecomputedLargeKernel(nn.Module):
    """A dense ``k×k`` kernel (``C → C``) built once per forward from re-parameterised branches.

    Training learns a 17×17, a 7×7 and a 3×3 kernel (the small ones help optimisation, as in RepLK);
    :meth:`kernel` merges them into a single 17×17 tensor. The merged kernel is computed once per
    forward and shared by every block; at inference (no autograd) it is pre-computed once and cached,
    so traced/exported graphs (Core ML, ONNX) hold one constant 17×17 weight.
    """

    def __init__(self, channels: int, kernel_size: int = 17, branches: tuple[int, ...] = (7, 3)) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.large = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        nn.init.normal_(self.large, std=0.5 / (channels * kernel_size))
        self.small = nn.ParameterList(
            nn.Parameter(torch.randn(channels, channels, k, k) * (0.5 / (channels * k)))
            for k in branches if k < kernel_size
        )
        # Non-persistent buffer: follows .to(device), never saved; tracers see a module tensor of known shape.
        self.register_buffer("precomputed", None, persistent=False)
        self._version: tuple[int, ...] | None = None

    def merged(self) -> torch.Tensor:
        """The single 17×17 kernel: the large branch plus the zero-padded small ones."""
        merged = self.large
        for small in self.small:
            pad = (self.kernel_size - small.shape[-1]) // 2
            merged = merged + F.pad(small, (pad, pad, pad, pad))
        return merged

    def kernel(self) -> torch.Tensor:
        """The merged kernel; without autograd it is pre-computed once and reused until a weight changes.

        The cached tensor is a constant to ``torch.jit.trace``/ONNX export, so exported graphs hold one
        17×17 weight and no merge arithmetic.
        """
        if torch.is_grad_enabled() and self.large.requires_grad:
            return self.merged()
        version = tuple(p._version for p in self.parameters()) + tuple(p.data_ptr() for p in self.parameters())
        if self.precomputed is None or self._version != version:
            with torch.no_grad():
                self.precomputed = self.merged().detach()
            self._version = version
        return self.precomputed


class ConvAttnBlock(nn.Module):
    """x + proj([PLK(x_a), dynamic(x_b)]) then x + FFN(x); ``x_a`` is the first ``plk_channels`` channels."""

    def __init__(self, dim: int, plk_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.plk_channels = plk_channels
        self.padding = kernel_size // 2
        rest = dim - plk_channels
        self.norm = nn.BatchNorm2d(dim)
        self.pw_in = nn.Conv2d(dim, dim, 1)
        # Dynamic branch: a depthwise 3×3 whose per-channel gain comes from the image's global context.
        self.dw = nn.Conv2d(rest, rest, 3, padding=1, groups=rest) if rest else None
        self.gate = nn.Sequential(nn.Conv2d(dim, max(dim // 4, 8), 1), nn.GELU(),
                                  nn.Conv2d(max(dim // 4, 8), rest, 1), nn.Sigmoid()) if rest else None
        self.pw_out = nn.Conv2d(dim, dim, 1)
        self.ffn = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, dim * 2, 1), nn.GELU(),
                                 nn.Conv2d(dim * 2, dim, 1))

    def forward(self, x: torch.Tensor, plk: torch.Tensor) -> torch.Tensor:
        y = self.pw_in(self.norm(x))
        a = F.conv2d(y[:, : self.plk_channels], plk, padding=self.padding)
        if self.dw is not None:
            rest = y[:, self.plk_channels :]
            gain = self.gate(y.mean(dim=(2, 3), keepdim=True))
            y = torch.cat([a, self.dw(rest) * gain], dim=1)
        else:
            y = a
        x = x + self.pw_out(F.gelu(y))
        return x + self.ffn(x)


class ConvAttnFusion(nn.Module):
    """Concatenate the V stride-32 maps, mix them with a 1×1 conv, run the ConvAttn blocks."""

    def __init__(self, cin: int, num_views: int, dim: int, blocks: int, plk_channels: int,
                 kernel_size: int, out_dim: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(cin * num_views, dim, 1)
        self.plk = PrecomputedLargeKernel(plk_channels, kernel_size)
        self.blocks = nn.ModuleList(ConvAttnBlock(dim, plk_channels, kernel_size) for _ in range(blocks))
        self.proj_out = nn.Conv2d(dim, out_dim, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(feats.flatten(1, 2))
        kernel = self.plk.kernel()  # computed once, shared by every block
        for block in self.blocks:
            x = block(x, kernel)
        return self.proj_out(x)


class MobileNetV3ConvAttnStudent(nn.Module):
    """``(B, 3 views, 3, H, W)`` normalised renders → four maps at ``H·sr_scale`` (1 by default)."""

    arch = "mobilenetv3_convattn"

    def __init__(self, cfg: StudentModelConfig) -> None:
        super().__init__()
        self.sr_scale = cfg.sr_scale
        bottleneck = cfg.decoder_channels[0] * 2
        self.encoder = MultiViewEncoder(cfg.pretrained)
        self.fusion = ConvAttnFusion(SKIP_CHANNELS[-1], cfg.num_views, cfg.convattn_dim, cfg.convattn_blocks,
                                     cfg.plk_channels, cfg.plk_kernel_size, bottleneck)
        self.decoder = SkipDecoder(bottleneck, list(cfg.decoder_channels))
        self.sr_head = SRHead(self.decoder.out_channels, cfg.sr_scale, cfg.sr_channels)
        self.heads = PBRHeads(self.sr_head.out_channels)

    def forward(self, views: torch.Tensor, use_sr: bool = True) -> dict[str, torch.Tensor]:
        feats = self.encoder(views)
        skips = [f.mean(dim=1) for f in feats[:-1]]
        x = self.decoder(self.fusion(feats[-1]), skips)
        return self.heads(self.sr_head(x) if use_sr else x)
