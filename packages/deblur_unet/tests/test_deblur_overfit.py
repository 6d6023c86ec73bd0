"""The model overfits a few real GoPro pairs (../shared/data/deblur, flat blur/ + sharp/ layout)."""

from pathlib import Path

import pytest
import torch

from deblur_unet.data import DeblurDataset, find_pairs
from deblur_unet.losses import CharbonnierLoss
from deblur_unet.model import DeblurUNet

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "deblur"


def test_overfits_real_pairs():
    if not (DATA / "blur").is_dir():
        pytest.skip(f"real deblur data not found at {DATA} (it sits beside the repository in CI)")
    torch.manual_seed(0)
    pairs = find_pairs(DATA)[:2]
    # Fixed centre crops: the same two patches every step, so the loss can only fall by memorising them.
    dataset = DeblurDataset.from_pairs(pairs, patch_size=48, is_training=False)
    blur = torch.stack([dataset[i][0] for i in range(len(dataset))])
    sharp = torch.stack([dataset[i][1] for i in range(len(dataset))])
    model = DeblurUNet(base_ch=8, residual=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    criterion = CharbonnierLoss()
    losses = []
    for _ in range(120):
        loss = criterion(model(blur), sharp)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
