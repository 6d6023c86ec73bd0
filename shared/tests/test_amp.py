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


def test_skipped_step_puts_poisoned_batchnorm_statistics_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    amp = MixedPrecision("fp32", "cpu", modules=[model])
    x = torch.randn(8, 4)
    assert amp.backward_and_step(model(x).pow(2).mean(), opt).stepped
    good = [b.clone() for b in model.buffers() if b.is_floating_point()]
    # The forward of a diverging step folds its NaNs into the running statistics before the loss is seen.
    loss = model(x * float("nan")).pow(2).mean()
    assert not torch.isfinite(model[1].running_mean).all()
    assert not amp.backward_and_step(loss, opt).stepped
    after = [b for b in model.buffers() if b.is_floating_point()]
    assert all(torch.equal(a, b) for a, b in zip(good, after, strict=True))


def test_non_finite_error_is_a_one_line_stop_with_its_own_status_not_a_runtime_error():
    from shared.errors import EXIT_DIVERGED, TrainingStopped

    assert issubclass(NonFiniteError, TrainingStopped) and not issubclass(NonFiniteError, RuntimeError)
    assert NonFiniteError.exit_status == EXIT_DIVERGED == 3


def _run_of_nans(amp, model, opt):
    with pytest.raises(NonFiniteError) as info:
        for _ in range(amp.max_consecutive_nonfinite):
            amp.backward_and_step(model(torch.ones(1, 4)).sum() * float("nan"), opt)
    return info.value


def test_diverged_saves_the_last_good_state_and_says_so(tmp_path, capsys):
    from shared.amp import diverged
    from shared.checkpoint import load_checkpoint

    model, opt = _setup()
    amp = MixedPrecision("fp32", "cpu", max_consecutive_nonfinite=3)
    amp.backward_and_step(model(torch.ones(1, 4)).sum(), opt)
    last_good = model.weight.detach().clone()
    error = _run_of_nans(amp, model, opt)
    # Each skip is logged; the last one is the error itself.
    assert capsys.readouterr().err.count("warning: skipped a step with non-finite loss") == 2
    path = tmp_path / "latest.pth"
    raised = diverged(error, {"state": {"model": model.state_dict()}}, path)
    assert isinstance(raised, NonFiniteError)
    assert str(raised) == ("training diverged: 3 consecutive steps with non-finite loss (3 skipped in all; "
                           f"lower the learning rate); saved the last good state to {path}")
    assert torch.equal(load_checkpoint(path)["state"]["model"]["weight"], last_good)


def test_non_finite_state_never_overwrites_a_checkpoint(tmp_path):
    from shared.amp import diverged, ensure_finite, nonfinite_entries
    from shared.checkpoint import save_checkpoint

    model, opt = _setup()
    path = tmp_path / "latest.pth"
    with torch.no_grad():
        model.bias.fill_(float("inf"))  # as an overflowing optimizer step would leave it
    state = {"state": {"model": model.state_dict(), "steps": torch.tensor([3])}}
    assert nonfinite_entries(state) == ["state/model/bias"]

    error = diverged(NonFiniteError("training diverged: x"), state, path)
    assert str(error).endswith(f"no checkpoint was written ({path} does not exist)") and not path.exists()
    save_checkpoint(path, {"previous": True})
    error = diverged(NonFiniteError("training diverged: x"), state, path)
    assert "model/bias" in str(error) and str(error).endswith("(the last finite state saved)")
    with pytest.raises(NonFiniteError, match=r"not finite at the end of epoch 2 \(1 tensors, e\.g\. model/bias"):
        ensure_finite(state, "the end of epoch 2", path)
    ensure_finite({"state": {"model": nn.Linear(2, 2).state_dict()}}, "the end of epoch 2", path)
    assert torch.load(path, weights_only=True) == {"previous": True}
