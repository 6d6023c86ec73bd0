"""Memory and FLOP estimate of one teacher training step, without a GPU.

``python -m neuropbr.memory --config default --image-size 2048 --batch-size 2 --precision bf16``

The step is run for real, but on fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes,
dtypes and autograd, no data), so a 2048² step of the largest preset takes seconds on any machine. It is
the training step of ``neuropbr.train`` op for op: the generator's forward under autocast, the
discriminator's step on real and generated maps when the GAN is on, the generator's loss through the
discriminator, backward, gradient clipping and the optimizer step, with the optimizers' state already
allocated as it is from the second step of a run on. A counter below the fake tensors sees
every tensor each op allocates and when its storage is freed; the peak of the live bytes is the estimate:
parameters, gradients, optimizer states, saved activations, and the temporaries of whichever op runs at
the peak.

Attention is counted as the kernel that runs on a CUDA GPU: ``scaled_dot_product_attention`` there picks
the flash or memory-efficient kernel, which keeps the output and a log-sum-exp per query (and a random
seed for dropout), never the ``N × N`` matrix. Other ops allocate what their CPU/meta implementation
allocates; the CUDA caching allocator's rounding and fragmentation, the CUDA context and cuDNN
workspaces come on top (a few GiB on an 80 GB GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from neuropbr.train_config import TrainConfig, load_config

GIB = 1024**3
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class LiveBytes(TorchDispatchMode):
    """Count the bytes of every tensor storage created under this mode while it is alive.

    Each op's outputs are charged once per storage (views and in-place results share it); a weak
    reference on the storage takes the bytes off again when the last tensor using it is gone.
    ``peak`` is the high-water mark since the mode was entered (or since :meth:`reset_peak`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def reset_peak(self) -> None:
        self.peak = self.live

    def _freed(self, key: int, nbytes: int, _ref: weakref.ref) -> None:
        if self._refs.pop(key, None) is not None:
            self.live -= nbytes

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._refs and self._refs[key]() is storage:
            return
        nbytes = storage.nbytes()
        self._refs[key] = weakref.ref(storage, lambda ref, k=key, n=nbytes: self._freed(k, n, ref))
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def efficient_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """The memory-efficient SDPA kernel (what CUDA runs): saves the output and a log-sum-exp per query."""
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, dropout_p, False)[0]


@contextlib.contextmanager
def cuda_attention_kernel() -> Iterator[None]:
    """Count attention as CUDA's memory-efficient kernel, forward and (checkpointed) backward alike."""
    from neuropbr.models.transformers import vision_transformer as vit

    previous = vit.attention_kernel_override
    vit.attention_kernel_override = efficient_attention
    try:
        yield
    finally:
        vit.attention_kernel_override = previous


@dataclass
class Estimate:
    """One training step: parameter counts, forward FLOP, and the peak of live tensor bytes."""

    generator_params: int
    discriminator_params: int
    forward_flop: float
    peak_bytes: int
    image_size: int
    batch_size: int
    precision: str
    checkpointing: bool

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def lines(self) -> list[str]:
        b = self.batch_size
        return [
            f"image size {self.image_size}², batch {b}, precision {self.precision}, "
            f"activation checkpointing {'on' if self.checkpointing else 'off'}",
            f"generator parameters: {self.generator_params / 1e6:.1f}M",
            f"discriminator parameters: {self.discriminator_params / 1e6:.1f}M",
            f"forward: {self.forward_flop / 1e12:.2f} TFLOP per step ({self.forward_flop / 1e12 / b:.2f} per sample)",
            f"peak training memory: {self.peak_gib:.1f} GiB",
        ]


def _autocast(precision: str) -> contextlib.AbstractContextManager:
    # The fake tensors report the CPU device, so CPU autocast is the one that casts them; it sends
    # convolutions and matmuls to the low precision and keeps norms in fp32, as CUDA autocast does.
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=_DTYPES[precision])


def training_step(cfg: TrainConfig, generator, discriminator, criterion, opt_g, opt_d, inputs, targets,
                  precision: str, forward_context: contextlib.AbstractContextManager | None = None) -> None:
    """The generator/discriminator step of ``neuropbr.train.Trainer.train_step`` (GAN on when built)."""
    from neuropbr.losses.losses import gan_discriminator_loss
    from neuropbr.maps import maps_to_tensor, tensor_to_maps

    target = tensor_to_maps(targets)
    with _autocast(precision), forward_context or contextlib.nullcontext():
        pred = generator(inputs)
    if discriminator is not None:
        real = maps_to_tensor(target)
        fake = maps_to_tensor(pred).detach()
        for _ in range(cfg.training.d_steps_per_g_step):
            opt_d.zero_grad(set_to_none=True)
            with _autocast(precision):
                d_real, d_fake = discriminator(torch.cat([real, fake.to(real.dtype)])).chunk(2)
                d_loss = cfg.loss.w_discriminator * gan_discriminator_loss(
                    d_real, d_fake, cfg.loss.gan_loss_type, cfg.model.discriminator_use_sigmoid)
            d_loss.backward()
            if cfg.training.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(discriminator.parameters(), cfg.training.grad_clip_norm)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            del d_real, d_fake, d_loss
        del real, fake
    fake_out = None
    with _autocast(precision):
        if discriminator is not None:
            discriminator.requires_grad_(False)
            fake_out = discriminator(maps_to_tensor(pred))
        total, parts = criterion(pred, target, fake_out)
    del pred, fake_out, parts
    total.backward()
    del total
    if discriminator is not None:
        discriminator.requires_grad_(True)
    if cfg.training.grad_clip_norm:
        torch.nn.utils.clip_grad_norm_(generator.parameters(), cfg.training.grad_clip_norm)
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)


@contextlib.contextmanager
def _fake_mode() -> Iterator[None]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        yield


def estimate(cfg: TrainConfig, image_size: int | None = None, batch_size: int | None = None,
             precision: str = "bf16", attention: str = "efficient") -> Estimate:
    """Run one training step of ``cfg``'s generator (and discriminator) on fake tensors.

    ``attention="efficient"`` counts attention as CUDA's memory-efficient kernel; ``"native"`` lets
    ``scaled_dot_product_attention`` pick its kernel for the CPU (what a CPU run really allocates).
    Nothing is allocated for real; the model is built from ``cfg`` exactly as training builds it.
    """
    from neuropbr.losses.losses import HybridLoss
    from neuropbr.models.gan.discriminator import build_discriminator
    from neuropbr.models.generator import MultiViewPBRGenerator
    from neuropbr.train import make_optimizer

    cfg = copy.deepcopy(cfg)
    # Only shapes matter; a weights file may not exist where the estimate runs.
    cfg.model.pretrained_path = None
    image_size = image_size or cfg.data.image_size
    batch_size = batch_size or cfg.data.batch_size
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
    use_gan = bool(cfg.model.use_gan and cfg.loss.w_gan > 0)
    attn_mode = cuda_attention_kernel() if attention == "efficient" else contextlib.nullcontext()
    # Built on the meta device (initialisers there cost nothing and read no data), then given fake storage.
    with torch.device("meta"):
        generator = MultiViewPBRGenerator(cfg, quiet=True).train()
        discriminator = build_discriminator(cfg.model).train() if use_gan else None
    counter = LiveBytes()
    with _fake_mode(), counter, attn_mode:
        generator.to_empty(device="cpu")
        if discriminator is not None:
            discriminator.to_empty(device="cpu")
        o = cfg.optimizer
        opt_g = make_optimizer(o.g_optimizer, generator.parameters(), o.g_lr, o.g_betas, o.g_weight_decay)
        opt_d = (make_optimizer(o.d_optimizer, discriminator.parameters(), o.d_lr, o.d_betas, o.d_weight_decay)
                 if use_gan else None)
        criterion = HybridLoss(cfg.loss, cfg.model.discriminator_use_sigmoid)
        inputs = torch.empty(batch_size, 3, 3, image_size, image_size)
        targets = torch.empty(batch_size, 8, image_size, image_size)
        # The optimizers' state as it stands after the first step of a run, without running one.
        for opt in (opt_g, opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    for p in group["params"]:
                        p.grad = torch.zeros_like(p)
                opt.step()
                opt.zero_grad(set_to_none=True)
        flops = FlopCounterMode(display=False)
        training_step(cfg, generator, discriminator, criterion, opt_g, opt_d, inputs, targets, precision, flops)
        peak = counter.peak
        flop = float(flops.get_total_flops())
        checkpointing = generator.checkpointing_active(inputs)
        g_params = sum(p.numel() for p in generator.parameters())
        d_params = sum(p.numel() for p in discriminator.parameters()) if discriminator is not None else 0
    return Estimate(g_params, d_params, flop, peak, image_size, batch_size, precision, checkpointing)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuropbr.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="default", help="preset name or config file (default: default)")
    p.add_argument("--image-size", type=int, help="training image size (default: the config's data.image_size)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the config's data.batch_size)")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--checkpointing", choices=["auto", "on", "off"], default=None,
                   help="override model.activation_checkpointing (default: the config's)")
    args = p.parse_args(argv)
    from shared.errors import ConfigError

    try:
        cfg = load_config(args.config)
        if args.checkpointing is not None:
            cfg.model.activation_checkpointing = {"auto": None, "on": True, "off": False}[args.checkpointing]
        cfg.finalize()
        for name, value in (("--image-size", args.image_size), ("--batch-size", args.batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = estimate(cfg, args.image_size, args.batch_size, args.precision)
    print("\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
