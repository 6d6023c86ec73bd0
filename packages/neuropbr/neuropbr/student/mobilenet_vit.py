"""Student A: MobileNetV3-Large encoder + small ViT cross-view fusion + skip decoder + ×2 SR head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuropbr.student.blocks import SKIP_CHANNELS, MultiViewEncoder, PBRHeads, SkipDecoder, SRHead
from neuropbr.student.config import StudentModelConfig


class FusionBlock(nn.Module):
    """Pre-norm transformer block; attention runs over the tokens of all views together."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ViTFusion(nn.Module):
    """Tokens of the V stride-32 maps attend across views; the result is averaged over views.

    Position comes from a depthwise 3×3 conv (a conditional position encoding), so the block works at
    any input size without interpolating a learned table; a learned embedding tells the views apart.
    """

    def __init__(self, cin: int, dim: int, depth: int, heads: int, mlp_ratio: float, num_views: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, 1)
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.view_embed = nn.Parameter(torch.zeros(1, num_views, 1, dim))
        nn.init.trunc_normal_(self.view_embed, std=0.02)
        self.blocks = nn.ModuleList(FusionBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, V, C, h, w)`` → ``(B, dim, h, w)``."""
        b, v, _, h, w = feats.shape
        x = self.proj(feats.flatten(0, 1))
        x = x + self.pos(x)
        dim = x.shape[1]
        tokens = x.flatten(2).transpose(1, 2).reshape(b, v, h * w, dim) + self.view_embed
        tokens = tokens.reshape(b, v * h * w, dim)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens).reshape(b, v, h * w, dim).mean(dim=1)
        return tokens.transpose(1, 2).reshape(b, dim, h, w)


class MobileNetV3ViTStudent(nn.Module):
    """``(B, 3 views, 3, H, W)`` normalised renders → four maps at ``H·sr_scale``."""

    arch = "mobilenetv3_vit"

    def __init__(self, cfg: StudentModelConfig) -> None:
        super().__init__()
        self.sr_scale = cfg.sr_scale
        self.encoder = MultiViewEncoder(cfg.pretrained)
        self.fusion = ViTFusion(SKIP_CHANNELS[-1], cfg.transformer_dim, cfg.transformer_depth,
                                cfg.transformer_num_heads, cfg.transformer_mlp_ratio, cfg.num_views)
        self.decoder = SkipDecoder(cfg.transformer_dim, list(cfg.decoder_channels))
        self.sr_head = SRHead(self.decoder.out_channels, cfg.sr_scale, cfg.sr_channels)
        self.heads = PBRHeads(self.sr_head.out_channels)

    def forward(self, views: torch.Tensor, use_sr: bool = True) -> dict[str, torch.Tensor]:
        """``use_sr=False`` skips the SR head (decoder and head widths match by construction), so the
        maps come out at input resolution: the converter's ANE memory test mode."""
        feats = self.encoder(views)
        skips = [f.mean(dim=1) for f in feats[:-1]]
        x = self.decoder(self.fusion(feats[-1]), skips)
        return self.heads(self.sr_head(x) if use_sr else x)
