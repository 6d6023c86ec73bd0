"""Training memory: activation checkpointing changes nothing but memory, and the estimator is right."""

from __future__ import annotations

import copy
import ctypes
import gc

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from neuropbr import memory
from neuropbr.losses.losses import HybridLoss
from neuropbr.maps import tensor_to_maps
from neuropbr.models.gan.discriminator import build_discriminator
from neuropbr.models.generator import MultiViewPBRGenerator
from neuropbr.train import make_optimizer
from neuropbr.train_config import get_default_config, get_quick_test_config


def _default_architecture_narrow_fusion():
    # The default architecture (ResNet-50 at encoder stride 1, four fusion blocks with dropout, the
    # default decoder and heads) with the fusion 128 wide instead of 2048: at 2048 the fusion alone is
    # 218M parameters, too many for a CPU test; its blocks run the same code at any width.
    cfg = get_default_config()
    cfg.model.transformer_dim = 128
    cfg.model.transformer_num_heads = 8
    return cfg.finalize()


def _step(generator, views, target, switch):
    """One forward + backward; gradients, buffers, outputs and the bytes autograd saved."""
    generator.config.activation_checkpointing = switch
    generator.zero_grad(set_to_none=True)
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(123)  # the same dropout draws in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        active = generator.checkpointing_active(views)
        pred = generator(views)
    total, _ = HybridLoss(get_default_config().loss)(pred, target)
    total.backward()
    grads = {n: p.grad.clone() for n, p in generator.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in generator.named_buffers()}
    return active, grads, buffers, {k: v.detach().clone() for k, v in pred.items()}, sum(saved.values())


def test_checkpointing_leaves_outputs_gradients_and_statistics_unchanged():
    torch.manual_seed(0)
    generator = MultiViewPBRGenerator(_default_architecture_narrow_fusion(), quiet=True).train()
    start = copy.deepcopy(generator.state_dict())
    views = torch.randn(2, 3, 3, 32, 32)
    target = tensor_to_maps(torch.rand(2, 8, 32, 32))

    runs = {}
    for switch in (False, True):
        generator.load_state_dict(start)
        runs[switch] = _step(generator, views, target, switch)
    (off_active, off_grads, off_buffers, off_out, off_saved) = runs[False]
    (on_active, on_grads, on_buffers, on_out, on_saved) = runs[True]

    assert (off_active, on_active) == (False, True)
    # Only segment inputs are kept during the forward pass.
    assert on_saved < 0.5 * off_saved, (on_saved, off_saved)
    for name in off_out:
        torch.testing.assert_close(on_out[name], off_out[name], rtol=0, atol=0)
    assert on_grads.keys() == off_grads.keys() and len(off_grads) > 200
    for name, grad in off_grads.items():
        torch.testing.assert_close(on_grads[name], grad, msg=lambda m, n=name: f"{n}: {m}")
    # BatchNorm folds each batch into its running statistics once, not again in the rerun.
    for name, buf in off_buffers.items():
        torch.testing.assert_close(on_buffers[name], buf, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
    assert not torch.equal(on_buffers["encoder.stem.1.running_mean"], start["encoder.stem.1.running_mean"])


def test_checkpointing_auto_follows_the_step_size_and_never_runs_outside_training():
    generator = MultiViewPBRGenerator(get_quick_test_config(), quiet=True)
    small, big = torch.empty(2, 3, 3, 64, 64), torch.empty(1, 3, 3, 2048, 2048)
    assert generator.config.activation_checkpointing is None
    assert not generator.checkpointing_active(small) and generator.checkpointing_active(big)
    with torch.no_grad():
        assert not generator.checkpointing_active(big)
    generator.eval()
    assert not generator.checkpointing_active(big)
    generator.train()
    generator.config.activation_checkpointing = True
    assert generator.checkpointing_active(small)
    generator.config.activation_checkpointing = False
    assert not generator.checkpointing_active(big)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_in_use():
    """Bytes the C allocator has handed out and not taken back (glibc), or None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


class _AllocatorSampler(TorchDispatchMode):
    """Reads the allocator's bytes in use after every op: the measured side, independent of the
    estimator's own bookkeeping of tensor storages."""

    def __init__(self, in_use) -> None:
        super().__init__()
        self.in_use, self.start = in_use, in_use()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.in_use() - self.start)
        return out


def _measured_cpu_peak(cfg, size: int, batch: int, in_use) -> int:
    """Peak bytes of a real CPU training step, from building the models on, as the allocator saw it."""
    torch.manual_seed(0)
    gc.collect()
    sampler = _AllocatorSampler(in_use)
    with sampler:
        generator = MultiViewPBRGenerator(cfg, quiet=True).train()
        discriminator = build_discriminator(cfg.model).train()
        o = cfg.optimizer
        opt_g = make_optimizer(o.g_optimizer, generator.parameters(), o.g_lr, o.g_betas, o.g_weight_decay)
        opt_d = make_optimizer(o.d_optimizer, discriminator.parameters(), o.d_lr, o.d_betas, o.d_weight_decay)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = torch.zeros_like(p)
            opt.step()
            opt.zero_grad(set_to_none=True)
        criterion = HybridLoss(cfg.loss, cfg.model.discriminator_use_sigmoid)
        inputs, targets = torch.randn(batch, 3, 3, size, size), torch.rand(batch, 8, size, size)
        memory.training_step(cfg, generator, discriminator, criterion, opt_g, opt_d, inputs, targets, "fp32")
    return sampler.peak


# Without checkpointing (slow): the plain step, same code path otherwise.
@pytest.mark.parametrize("checkpointing", [pytest.param(False, marks=pytest.mark.slow), True])
def test_estimate_matches_measured_cpu_peak(checkpointing):
    cfg = get_quick_test_config()
    cfg.model.activation_checkpointing = checkpointing
    cfg.finalize()
    in_use = _malloc_in_use()
    if in_use is None:
        pytest.skip("needs glibc's mallinfo2 to read the allocator's bytes in use")
    size, batch = 128, 2
    measured = _measured_cpu_peak(cfg, size, batch, in_use)
    # "native": the attention kernel the CPU really runs (the GPU estimate counts CUDA's instead).
    est = memory.estimate(cfg, size, batch, "fp32", attention="native")
    assert est.checkpointing is checkpointing
    assert abs(est.peak_bytes - measured) <= 0.25 * measured, f"estimate {est.peak_bytes}, measured {measured}"


def test_cli_default_preset_at_2048_fits_80_gib(capsys):
    assert memory.main(["--config", "default", "--image-size", "2048", "--batch-size", "2",
                        "--precision", "bf16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "generator parameters: 266.4M" in lines
    assert any(line.startswith("forward: ") and "TFLOP" in line for line in lines)
    last = lines[-1]
    assert last.startswith("peak training memory: ") and last.endswith(" GiB"), last
    gib = float(last.removeprefix("peak training memory: ").removesuffix(" GiB"))
    assert 20 < gib < 80, last


def test_cli_bad_config_is_one_line(capsys):
    assert memory.main(["--config", "no_such_preset"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_preset" in err
