"""Ablation: the README demo run with ordinary (non-equalised) layers at the spec's lr 0.002.

    OMP_NUM_THREADS=1 uv run --package gansformer_inpaint docs/ablation_plain_layers.py RUN_DIR DATA_ROOT
"""
import sys

import torch

from gansformer_inpaint.config import Config
from gansformer_inpaint.models.layers import EqualConv2d, EqualConvTranspose2d, EqualLinear
from gansformer_inpaint.training import trainer as T

torch.set_num_threads(1)
orig = T.build_models

def plain_models(cfg):
    g, d = orig(cfg)
    for net in (g, d):
        for m in net.modules():
            if isinstance(m, (EqualConv2d, EqualConvTranspose2d, EqualLinear)):
                m.weight.data *= m.scale  # He-initialised plain layer: same function at step 0
                m.scale = 1.0
    return g, d

T.build_models = plain_models
cfg = Config(data_root=sys.argv[2], img_size=64, base_channels=16, d_channels=16, latent_dim=128,
             latent_num=16, num_heads=8, batch_size=4, num_epochs=60, workers=0, log_interval=1, save_interval=1000,
             checkpoint_dir=sys.argv[1], device="cpu")
T.Trainer(cfg).fit()
