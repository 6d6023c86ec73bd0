import pytest
import torch
from torch import nn

from shared.amp import MixedPrecision, NonFiniteError, autocast
from shared.errors import ConfigError


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_finite_step_updates_and_clips():
    model, opt = _setup()
    amp = MixedPrecision("fp32", "cpu")
    before = model.weight.detach().clone()
    loss = (model(torch.ones(2, 4)) * 1000).sum()
    result = amp.backward_and_step(loss, opt, max_grad_norm=1.0)
    assert result.stepped and result.grad_norm > 1.0  # norm before clipping is reported
    # Clipped to norm 1 then one SGD step of lr 0.1: parameters move by at most 0.1 in total norm.
    moved = torch.cat([(model.weight - before).flatten()]).norm()
    assert 0 < moved <= 0.1 + 1e-6
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("poison", ["loss", "grad"])
def test_non_finite_step_is_skipped_and_counted(poison):
    model, opt = _setup()
    amp = MixedPrecision("fp32", "cpu", max_consecutive_nonfinite=3)
    before = [p.detach().clone() for p in model.parameters()]
    out = model(torch.ones(1, 4)).sum()
    loss = out * float("nan") if poison == "loss" else out * torch.tensor(float("inf"))
    if poison == "grad":
        loss = model(torch.full((1, 4), float("inf"))).sum() * 0 + model.bias.sum()  # finite loss, inf grad
    result = amp.backward_and_step(loss, opt)
    assert not result.stepped and amp.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # A good step resets the consecutive counter but not the total.
    amp.backward_and_step(model(torch.ones(1, 4)).sum(), opt)
    assert amp.consecutive_nonfinite == 0 and amp.skipped_steps == 1


def test_run_of_non_finite_steps_raises():
    model, opt = _setup()
    amp = MixedPrecision("fp32", "cpu", max_consecutive_nonfinite=3)
    for _ in range(2):
        amp.backward_and_step(model(torch.ones(1, 4)).sum() * float("nan"), opt)
    with pytest.raises(NonFiniteError, match="3 consecutive"):
        amp.backward_and_step(model(torch.ones(1, 4)).sum() * float("nan"), opt)


def test_scaler_only_for_fp16_on_cuda_and_bf16_autocast_on_cpu():
    assert MixedPrecision("fp16", "cpu").scaler is None
    assert MixedPrecision("bf16", "cpu").scaler is None
    with autocast("cpu", "bf16"):
        y = nn.Linear(4, 4)(torch.ones(1, 4))
    assert y.dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert nn.Linear(4, 4)(torch.ones(1, 4)).dtype == torch.float32
    with pytest.raises(ConfigError, match="unknown precision"):
        MixedPrecision("fp8", "cpu")


def test_state_dict_round_trip():
    amp = MixedPrecision("bf16", "cpu")
    amp.skipped_steps = 4
    other = MixedPrecision("bf16", "cpu")
    other.load_state_dict(amp.state_dict())
    assert other.skipped_steps == 4
