"""Train N steps straight vs. N/2, save, rebuild everything from the file, N/2 more: same bits."""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.amp import MixedPrecision
from shared.checkpoint import load_checkpoint, make_training_state, restore_training_state, save_checkpoint
from shared.seed import make_generator, seed_everything

SEED = 123
EPOCHS = 4


def _build():
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return model, optimizer, scheduler, MixedPrecision("fp32", "cpu")


def _data():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g))


def _epoch(model, optimizer, scheduler, amp, dataset, epoch):
    # Data order depends on (seed, epoch) only, so a resumed epoch shuffles as the original would.
    loader = DataLoader(dataset, batch_size=8, shuffle=True, generator=make_generator(SEED + epoch))
    steps = 0
    for x, y in loader:
        noise = torch.randn_like(y) * 0.01  # consumes the global RNG, like augmentation would
        loss = nn.functional.mse_loss(model(x), y + noise)
        amp.backward_and_step(loss, optimizer, max_grad_norm=1.0)
        steps += 1
    scheduler.step()
    return steps


def test_resume_is_bit_exact(tmp_path):
    dataset = _data()
    seed_everything(SEED, deterministic=True)
    model, optimizer, scheduler, amp = _build()
    step = 0
    for epoch in range(EPOCHS):
        step += _epoch(model, optimizer, scheduler, amp, dataset, epoch)
    straight = {k: v.clone() for k, v in model.state_dict().items()}
    straight_opt = optimizer.state_dict()

    seed_everything(SEED, deterministic=True)
    model, optimizer, scheduler, amp = _build()
    step = 0
    for epoch in range(EPOCHS // 2):
        step += _epoch(model, optimizer, scheduler, amp, dataset, epoch)
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "amp": amp}
    save_checkpoint(tmp_path / "latest.pth", make_training_state(
        kind="test", epoch=EPOCHS // 2, global_step=step, objects=objects, config={"lr": 1e-2}))
    torch.manual_seed(999)  # the interrupted process's RNG is gone; resume must not depend on it

    model, optimizer, scheduler, amp = _build()
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "amp": amp}
    info = restore_training_state(load_checkpoint(tmp_path / "latest.pth"), objects, kind="test")
    assert info.epoch == EPOCHS // 2 and info.global_step == step and info.config == {"lr": 1e-2}
    for epoch in range(info.epoch, EPOCHS):
        step += _epoch(model, optimizer, scheduler, amp, dataset, epoch)

    for key, value in model.state_dict().items():
        assert torch.equal(value, straight[key]), key
    resumed_opt = optimizer.state_dict()
    for index, state in straight_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(resumed_opt["state"][index][name]), torch.as_tensor(value))
    assert step == 16
