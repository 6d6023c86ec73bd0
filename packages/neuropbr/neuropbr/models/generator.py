"""MultiViewPBRGenerator: shared per-view encoder → ViT cross-view fusion → UNet decoder → four maps."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neuropbr.models.checkpointing import run_segment
from neuropbr.models.decoders.unet import PBRHeads, UNetDecoder
from neuropbr.models.encoders.resnet import ResNetEncoder
from neuropbr.models.encoders.unet import UNetEncoder
from neuropbr.models.transformers.vision_transformer import CrossViewFusion
from neuropbr.utils.photometric import photometric_stereo

NUM_VIEWS = 3
INPUT_SKIP_CHANNELS = 32
# ``model.activation_checkpointing = None`` turns checkpointing on for training steps of at least this
# many pixels per view (batch × height × width, after padding): one 2048² sample. Measured with
# ``neuropbr.memory``: the default preset needs ~40 GiB at 1024² with batch 2 without it, ~147 GiB at
# 2048² (47 GiB with it), so below the threshold the default batch fits an 80 GB GPU unaided.
CHECKPOINT_AUTO_PIXELS = 4 * 1024 * 1024


def _model_config(config: Any):
    """Accept a TrainConfig, a ModelConfig, or their plain-dict forms (as stored in checkpoints)."""
    from neuropbr.train_config import ModelConfig, TrainConfig

    if isinstance(config, TrainConfig):
        return config.model
    if isinstance(config, ModelConfig):
        return config
    if config is None:
        return ModelConfig()
    if isinstance(config, Mapping):
        if "model" in config and isinstance(config["model"], Mapping):
            return TrainConfig.from_dict(config).model
        return TrainConfig.from_dict({"model": config}).model
    if dataclasses.is_dataclass(config) and hasattr(config, "model"):
        return TrainConfig.from_dict(dataclasses.asdict(config)).model
    raise TypeError(f"MultiViewPBRGenerator needs a TrainConfig, ModelConfig or dict, got {type(config).__name__}")


def _input_stats(config: Any) -> tuple[list[float], list[float]]:
    """The ``transform.mean/std`` the views were normalised with (the defaults for a bare ModelConfig)."""
    from neuropbr.train_config import TrainConfig, TransformConfig

    if isinstance(config, TrainConfig):
        return list(config.transform.mean), list(config.transform.std)
    if isinstance(config, Mapping) and isinstance(config.get("transform"), Mapping):
        transform = TrainConfig.from_dict({"transform": config["transform"]}).transform
        return list(transform.mean), list(transform.std)
    if dataclasses.is_dataclass(config) and hasattr(config, "transform"):
        return list(config.transform.mean), list(config.transform.std)
    return list(TransformConfig().mean), list(TransformConfig().std)


class MultiViewPBRGenerator(nn.Module):
    """Reconstruct albedo, roughness, metallic and normal maps from three rendered views.

    Args:
        config: a :class:`~neuropbr.train_config.TrainConfig`, its ``model`` section, or either as the
            plain dict stored in checkpoints (``ckpt['config']``).
        quiet: skip the "random initialisation" note (weights about to be loaded from a checkpoint).

    Input: ``views`` of shape ``(B, 3, 3, H, W)`` (three RGB views, normalised with the config's
    ``transform.mean/std``) or ``(B, 9, H, W)`` (the same, views stacked on channels, as tiled inference
    feeds it). Any ``H × W``: the input is reflect-padded to a multiple of the encoder's total stride and
    the outputs are cropped back.

    With ``model.photometric_input`` the views are also de-normalised (with the ``transform`` of a whole
    config; a bare ModelConfig means the default mean/std 0.5) for the photometric-stereo normal.

    Output: dict of ``(B, C, H, W)`` tensors:
    ``albedo`` (3, sigmoid, [0, 1] sRGB), ``roughness`` (1, [0, 1]), ``metallic`` (1, [0, 1]),
    ``normal`` (3, unit length, [-1, 1], tangent space, OpenGL +Y up).
    """

    def __init__(self, config: Any = None, quiet: bool = False) -> None:
        super().__init__()
        cfg = _model_config(config)
        self.config = cfg
        if cfg.encoder_type == "resnet":
            self.encoder: nn.Module = ResNetEncoder(cfg.encoder_backbone, cfg.encoder_stride,
                                                    cfg.encoder_in_channels, cfg.pretrained_path, quiet)
        else:
            self.encoder = UNetEncoder(list(cfg.encoder_channels), cfg.encoder_in_channels)
        enc_ch, reductions = self.encoder.channels, self.encoder.reductions
        self.stride = reductions[-1]
        self.fusion = CrossViewFusion(
            enc_ch[-1], cfg.transformer_dim, cfg.transformer_num_heads,
            cfg.transformer_depth if cfg.use_transformer else 0, cfg.transformer_mlp_ratio, NUM_VIEWS,
            cfg.transformer_attn_drop, cfg.transformer_proj_drop,
        )
        # Skips, deepest first; each fuses the three views' features by concat + 1×1 conv.
        self.skip_fusers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c * NUM_VIEWS, c, 1), nn.ReLU(inplace=True)) for c in enc_ch[-2::-1]]
        )
        skip_ch = list(enc_ch[-2::-1])
        self.photometric = bool(cfg.photometric_input)
        if self.photometric:
            # Photometric stereo reads the views in [0, 1]: undo the input normalisation (not weights).
            mean, std = _input_stats(config)
            self.register_buffer("view_mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
            self.register_buffer("view_std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)
        # Full-resolution detail straight from the views (albedo and fine normals live there), and the
        # photometric-stereo normal beside them when it is on.
        self.input_skip = nn.Sequential(
            nn.Conv2d(cfg.encoder_in_channels * NUM_VIEWS + (3 if self.photometric else 0), INPUT_SKIP_CHANNELS, 3,
                      padding=1),
            nn.ReLU(inplace=True),
        )
        self.full_res_in_encoder = reductions[0] == 1
        if self.full_res_in_encoder:
            skip_ch[-1] += INPUT_SKIP_CHANNELS
        else:
            skip_ch.append(INPUT_SKIP_CHANNELS)
        dec_ch = list(cfg.decoder_channels)[: len(skip_ch)]
        dec_ch += [dec_ch[-1]] * (len(skip_ch) - len(dec_ch))
        self.decoder = UNetDecoder(cfg.transformer_dim, skip_ch, dec_ch)
        self.detail_head = bool(cfg.normal_detail_head or self.photometric)
        self.heads = PBRHeads(self.decoder.out_channels, INPUT_SKIP_CHANNELS if self.detail_head else 0,
                              prior=self.photometric)
        if cfg.freeze_backbone:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> MultiViewPBRGenerator:
        super().train(mode)
        if self.config.freeze_bn:
            # Frozen BN: keep running statistics (e.g. from pretrained weights) at small batch sizes.
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def checkpointing_active(self, views: torch.Tensor) -> bool:
        """Whether a forward pass on ``views`` checkpoints its activations (see ``activation_checkpointing``)."""
        if not (self.training and torch.is_grad_enabled()):
            return False
        switch = self.config.activation_checkpointing
        if switch is not None:
            return bool(switch)
        h, w = views.shape[-2:]
        return views.shape[0] * (h + (-h) % self.stride) * (w + (-w) % self.stride) >= CHECKPOINT_AUTO_PIXELS

    def forward(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        on = self.checkpointing_active(views)
        for part in (self.encoder, self.fusion, self.decoder):
            part.checkpointing = on
        if views.dim() == 4:
            b, c, h, w = views.shape
            views = views.reshape(b, NUM_VIEWS, c // NUM_VIEWS, h, w)
        if views.dim() != 5 or views.shape[1] != NUM_VIEWS:
            raise ValueError(f"expected views of shape (B, 3, C, H, W) or (B, 3*C, H, W), got {tuple(views.shape)}")
        b, v, c, h, w = views.shape
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        flat = views.reshape(b * v, c, h, w)
        prior = None
        if self.photometric:
            with torch.no_grad():
                prior = photometric_stereo((views.float() * self.view_std + self.view_mean).clamp(0, 1)).to(views.dtype)
            if pad_h or pad_w:
                prior = F.pad(prior, (0, pad_w, 0, pad_h), mode=mode)
        if pad_h or pad_w:
            flat = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
        feats = self.encoder(flat)
        hp, wp = flat.shape[-2:]
        fused = self.fusion(feats[-1])
        skips = []
        for fuser, feat in zip(self.skip_fusers, feats[-2::-1], strict=True):
            skips.append(fuser(feat.reshape(b, v * feat.shape[1], *feat.shape[-2:])))
        stacked = flat.reshape(b, v * c, hp, wp)
        detail = self.input_skip(stacked if prior is None else torch.cat([stacked, prior], dim=1))
        if self.full_res_in_encoder:
            skips[-1] = torch.cat([skips[-1], detail], dim=1)
        else:
            skips.append(detail)
        out = run_segment(self.heads, self.decoder(fused, skips), detail if self.detail_head else None, prior,
                          enabled=on)
        if pad_h or pad_w:
            out = {k: t[..., :h, :w] for k, t in out.items()}
        return out
