"""Training throughput of each package: steps/s and peak memory in four configurations, on CPU or a GPU.

One step is what the package's trainer does for one batch: forward, the package's losses, backward and
optimizer step through ``shared.amp.MixedPrecision`` (gradient clipping included); for the GANs the
discriminator step and then the generator step. Where the package has a step function it is called
(``neuropbr.train.Trainer.train_step``, ``alphagan_matting``'s ``train_step``,
``gansformer_inpaint``'s ``Trainer.train_step``); deblur_unet and abpn_retouch run the step inline in
their loops, so the loop body is repeated here with the package's own model, loss, optimizer and AMP.

CPU configurations: ``fp32``, ``bf16`` (autocast), and each with ``channels_last`` (models and 4-D batch
tensors converted; NeuroPBR's 5-D views reach its convolutions through channels-last weights), at small
reference sizes (``SIZES``). With ``--device cuda``: the specs' sizes (``GPU_SIZES``) in fp32, AMP bf16,
AMP + channels_last and AMP + ``torch.compile`` (``GPU_CONFIGS``; steps synchronised, peak GPU memory
reported), and the largest ABPN 2048² batch that fits.

``python -m tests.benchmarks.bench_training STEPS [--quick] [--device cuda] [PACKAGE ...]`` (default: all five) imports
the packages once, then forks one child per package and configuration: clean peak memory without
paying the interpreter start (about 10 s with these imports) twenty times. Each child builds
everything, runs the warm-up step and STEPS timed steps, and reports the median. The last stdout
line is JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tests.benchmarks.common import median_seconds, run_forked

CONFIGS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32 + channels_last": ("fp32", True),
           "bf16 + channels_last": ("bf16", True)}
WARMUP = 1  # the first step creates and caches the oneDNN kernels for these shapes
GPU_WARMUP = 3  # torch.compile: the first steps trace and build kernels (forward, backward, both GANs' steps)
# On a GPU (issue 9, part 4): the specs' sizes, (side, batch) per row, and the four configurations.
GPU_SIZES = {
    "deblur_unet": [(256, 16)],
    "abpn_retouch": [(2048, 4)],
    "neuropbr": [(512, 2), (2048, 1)],
    "alphagan_matting": [(320, 5)],
    "gansformer_inpaint": [(256, 16)],
}
LARGEST_ABPN_BATCH = "largest ABPN 2048² batch (AMP bf16)"  # its key in the results, beside the packages
GPU_CONFIGS = {"fp32": ("fp32", False, False), "AMP bf16": ("bf16", False, False),
               "AMP bf16 + channels_last": ("bf16", True, False), "AMP bf16 + torch.compile": ("bf16", False, True)}

Step = Callable[[], object]
# The default teacher (ResNet-50 at stride 1, ViT 2048 × 4, 266 M parameters) with its 6-layer
# discriminator needs 256² views at least and takes seconds per step there: too slow for this section.
NEUROPBR_PRESET = ("quick_test", "default")  # (CPU, GPU): the GPU table runs the spec's teacher
SCRATCH: str | None = None  # the run's temporary folder (set by main; the forked children write inside)


@dataclass(frozen=True)
class Setup:
    """One configuration of one package: where it runs and how (``device`` ``cpu`` or ``cuda``)."""

    precision: str
    channels_last: bool
    size: int
    batch: int
    device: str = "cpu"
    compile: bool = False


def _cl(x: torch.Tensor, s: Setup) -> torch.Tensor:
    x = x.to(s.device)
    return x.contiguous(memory_format=torch.channels_last) if s.channels_last and x.dim() == 4 else x


def _cl_model(model: torch.nn.Module, s: Setup) -> torch.nn.Module:
    # In place on the same Parameter objects, so optimizers built before this still hold them.
    model = model.to(s.device)
    return model.to(memory_format=torch.channels_last) if s.channels_last else model


def _compiled(model: torch.nn.Module, s: Setup) -> torch.nn.Module:
    """What the step calls: ``torch.compile(model)`` when asked (it shares the model's parameters)."""
    return torch.compile(model) if s.compile else model


def deblur_unet(s: Setup) -> Step:
    from deblur_unet.config import TrainConfig
    from deblur_unet.data import SyntheticDeblurDataset
    from deblur_unet.losses import CharbonnierLoss
    from deblur_unet.model import DeblurUNet
    from shared.amp import MixedPrecision

    cfg = TrainConfig(synthetic=True, patch_size=s.size, batch_size=s.batch, precision=s.precision, device=s.device)
    model = _cl_model(DeblurUNet(base_ch=cfg.base_ch, residual=cfg.residual), s).train()
    forward = _compiled(model, s)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = MixedPrecision(cfg.precision, s.device)
    criterion = CharbonnierLoss(cfg.charbonnier_eps)
    data = SyntheticDeblurDataset(s.batch, s.size, training=True, seed=cfg.seed)
    blur, sharp = (_cl(torch.stack(t), s) for t in zip(*(data[i] for i in range(s.batch)), strict=True))

    def step():  # deblur_unet.trainer._train's loop body
        with amp.autocast():
            loss = criterion(forward(blur), sharp)
        amp.backward_and_step(loss, optimizer, max_grad_norm=cfg.grad_clip or None)

    return step


def abpn_retouch(s: Setup) -> Step:
    from abpn_retouch.config import TrainConfig
    from abpn_retouch.data import to_model
    from abpn_retouch.losses import LossWeights, RetouchLoss
    from abpn_retouch.model import ABPN
    from abpn_retouch.train import build_dataset, model_config
    from shared.amp import MixedPrecision

    cfg = TrainConfig(synthetic=True, synthetic_count=1, synthetic_size=s.size, patch_size=s.size, stride=s.size,
                      batch_size=s.batch, precision=s.precision, device=s.device)
    data = build_dataset(cfg)
    items = [data[i % len(data)] for i in range(s.batch)]
    # The trainer moves uint8 patches to the device and converts them there (abpn_retouch.data.to_model).
    inputs, targets, masks = (_cl(x, s) for x in to_model(torch.utils.data.default_collate(items), s.device))
    model = _cl_model(ABPN(model_config(cfg)), s).train()
    forward = _compiled(model, s)
    weights = LossWeights(cfg.w_masked_l1, cfg.w_global_l1, cfg.w_edge, cfg.w_high_freq, cfg.w_perceptual,
                          cfg.w_dice)
    criterion = _cl_model(RetouchLoss(weights, cfg.vgg_weights or None, cfg.perceptual_size, quiet=True), s)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    amp = MixedPrecision(s.precision, s.device)

    def step():  # abpn_retouch.train._train's loop body
        with amp.autocast():
            output, mask_logits = forward(inputs)
            loss, _ = criterion(output, targets, mask_logits, masks)
        amp.backward_and_step(loss, optimizer, max_grad_norm=cfg.max_grad_norm or None)

    return step


def neuropbr(s: Setup) -> Step:
    from neuropbr.train import Trainer
    from neuropbr.train_config import load_config

    cfg = load_config(NEUROPBR_PRESET[s.device != "cpu"])
    cfg.data.synthetic, cfg.data.synthetic_image_size, cfg.data.synthetic_num_samples = True, s.size, s.batch + 1
    cfg.data.batch_size, cfg.data.num_workers, cfg.data.val_ratio = s.batch, 0, 0.0
    cfg.training.device, cfg.training.precision = s.device, s.precision
    cfg.training.checkpoint_dir = tempfile.mkdtemp(prefix="neuropbr_", dir=SCRATCH)
    trainer = Trainer(cfg.finalize(), None, None)
    for model in (trainer.generator, trainer.discriminator):
        _cl_model(model, s)
    trainer.generator, trainer.discriminator = _compiled(trainer.generator, s), _compiled(trainer.discriminator, s)
    items = [trainer.dataset[i] for i in range(s.batch)]
    inputs, targets = (_cl(torch.stack(t), s) for t in zip(*items, strict=True))
    return lambda: trainer.train_step(inputs, targets, gan_active=True)


def alphagan_matting(s: Setup) -> Step:
    from alphagan_matting.dataset import collate
    from alphagan_matting.schemas import Config, MattingBatch
    from alphagan_matting.train_pipeline.steps import TrainParts, train_step
    from alphagan_matting.train_pipeline.trainer import RunOptions, build_datasets
    from alphagan_matting.utils import build_discriminator, build_generator
    from shared.amp import MixedPrecision

    cfg = Config()
    cfg.train.crop_size = cfg.test.resize_size = s.size
    cfg.general.batch_size = s.batch
    train_set, _ = build_datasets(cfg, RunOptions(synthetic=True, synthetic_size=s.batch))
    raw = collate([train_set[i] for i in range(s.batch)])
    data = MattingBatch(**{k: _cl(v, s) for k, v in MattingBatch.from_dict(raw).__dict__.items()})
    # What alphagan_matting.train_pipeline.trainer._train assembles (it has no builder function for it).
    t = cfg.train
    generator = _cl_model(build_generator(cfg.model), s).train()
    discriminator = _cl_model(build_discriminator(cfg.model), s).train()
    opt_g = torch.optim.AdamW(generator.parameters(), lr=t.G.scheduler.start_lr, weight_decay=t.optimizer.weight_decay)
    opt_d = torch.optim.AdamW(discriminator.parameters(), lr=t.D.scheduler.start_lr,
                              weight_decay=t.optimizer.weight_decay)
    sched_g = torch.optim.lr_scheduler.CyclicLR(opt_g, base_lr=t.G.scheduler.start_lr, max_lr=t.G.scheduler.end_lr,
                                                step_size_up=t.G.scheduler.step_size_up, cycle_momentum=False)
    sched_d = torch.optim.lr_scheduler.CyclicLR(opt_d, base_lr=t.D.scheduler.start_lr, max_lr=t.D.scheduler.end_lr,
                                                step_size_up=t.D.scheduler.step_size_up, cycle_momentum=False)
    mean = torch.tensor(cfg.general.mean, device=s.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.general.std, device=s.device).view(1, 3, 1, 1)
    parts = TrainParts(_compiled(generator, s), _compiled(discriminator, s), opt_g, opt_d, sched_g, sched_d,
                       MixedPrecision(s.precision, s.device), MixedPrecision(s.precision, s.device), mean, std)
    return lambda: train_step(parts, data, cfg, 0, None)


def gansformer_inpaint(s: Setup) -> Step:
    from gansformer_inpaint.config import Config
    from gansformer_inpaint.training.trainer import Trainer

    cfg = Config(img_size=s.size, batch_size=s.batch, synthetic=True, synthetic_size=s.batch, workers=0,
                 device=s.device, precision=s.precision,
                 checkpoint_dir=tempfile.mkdtemp(prefix="gansformer_", dir=SCRATCH))
    trainer = Trainer(cfg)
    for model in (trainer.gen_module, trainer.disc_module):
        _cl_model(model, s)
    trainer.gen, trainer.disc = _compiled(trainer.gen, s), _compiled(trainer.disc, s)
    items = [trainer.dataset[i] for i in range(s.batch)]
    data = {k: _cl(torch.stack([it[k] for it in items]), s) for k in ("masked", "gt", "mask")}

    def step():
        # As Trainer.fit counts: the lazy R1 pass runs when global_step % d_reg_interval == 0.
        trainer.train_step(data)
        trainer.global_step += 1

    # Start just after an R1 step: the warm-up steps then run none, nor do the timed ones (1 in 16 would).
    trainer.global_step = 1
    return step


# Reference sizes: (side, batch), and for --quick. Chosen so that one package's four configurations
# take about 10-20 s on a 2-core CPU.
SIZES = {
    "deblur_unet": ((128, 4), (32, 1)),
    "abpn_retouch": ((320, 1), (64, 1)),
    "neuropbr": ((128, 2), (32, 1)),
    "alphagan_matting": ((96, 2), (32, 2)),
    "gansformer_inpaint": ((64, 4), (32, 1)),
}
WHAT = {
    "deblur_unet": "DeblurUNet (base 32), {s}² synthetic patches, batch {b}, Charbonnier, AdamW",
    "abpn_retouch": "ABPN (default config), {s}² synthetic patches, batch {b}, the six retouch losses "
                    "(VGG16 perceptual), Adam",
    "neuropbr": "`quick_test` teacher (ResNet-18, ViT 256 × 2) + 3-layer PatchGAN, 3 views of {s}², "
                "batch {b}, GAN on",
    "alphagan_matting": "ResNet-50 generator + PatchGAN, {s}² crops, batch {b}, D step then G step",
    "gansformer_inpaint": "GANsformer {s}², batch {b}, D step then G step (lazy R1 not in the timed steps)",
}
# What each trainer runs on CPU when not told otherwise (AlphaGAN's YAML turns bf16 autocast on).
DEFAULT_CONFIG = {"deblur_unet": "fp32", "abpn_retouch": "fp32", "neuropbr": "fp32", "alphagan_matting": "bf16",
                  "gansformer_inpaint": "fp32"}
BUILDERS = {f.__name__: f for f in (deblur_unet, abpn_retouch, neuropbr, alphagan_matting, gansformer_inpaint)}
PRELOAD = {
    "deblur_unet": ["deblur_unet.model", "deblur_unet.data", "deblur_unet.losses", "shared.amp"],
    "abpn_retouch": ["abpn_retouch.train", "torchvision.models"],
    "neuropbr": ["neuropbr.train"],
    "alphagan_matting": ["alphagan_matting.train_pipeline.trainer"],
    "gansformer_inpaint": ["gansformer_inpaint.training.trainer"],
}


def describe(package: str, quick: bool = False) -> str:
    side, batch = SIZES[package][quick]
    return WHAT[package].format(s=side, b=batch)


def measure(package: str, config: str, steps: int, quick: bool, device: str = "cpu", side: int = 0,
            batch: int = 0) -> dict:
    torch.manual_seed(0)
    cuda = device != "cpu"
    precision, channels_last, compile_ = GPU_CONFIGS[config] if cuda else (*CONFIGS[config], False)
    if not side:
        side, batch = GPU_SIZES[package][0] if cuda else SIZES[package][quick]
    setup = Setup(precision, channels_last, side, batch, device, compile_)
    start = time.perf_counter()
    step = BUILDERS[package](setup)
    build = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        inner = step

        def step():  # CUDA runs asynchronously: a step is done when its kernels are
            inner()
            torch.cuda.synchronize()

    # torch.compile traces and builds its kernels on the first calls (forward, then backward).
    seconds = median_seconds(step, steps, warmup=GPU_WARMUP if compile_ else WARMUP)
    result = {"config": config, "seconds": seconds, "steps_per_s": 1.0 / seconds, "build_s": build,
              "side": side, "batch": batch}
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def fits(package: str, config: str, side: int, batch: int) -> dict:
    """Whether one training step of ``package`` at ``side``² × ``batch`` fits in the GPU's memory."""
    try:
        return {**measure(package, config, 1, False, "cuda", side, batch), "fits": True}
    except torch.OutOfMemoryError:
        return {"fits": False, "batch": batch}


def largest_batch(package: str, config: str, side: int, limit: int = 64) -> tuple[int, dict]:
    """The largest power-of-two batch (up to ``limit``) whose training step fits, each try in its own child."""
    best: tuple[int, dict] = (0, {})
    batch = 1
    while batch <= limit:
        r = run_forked(fits, package, config, side, batch)
        print(f"  {package} {side}² batch {batch}: {'fits' if r['fits'] else 'out of memory'}", file=sys.stderr,
              flush=True)
        if not r["fits"]:
            break
        best, batch = (batch, r), batch * 2
    return best


def main() -> None:
    global SCRATCH

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("steps", type=int)
    parser.add_argument("packages", nargs="*", help=f"default: all of {', '.join(BUILDERS)}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: the specs' sizes (GPU_SIZES) and the GPU configurations (GPU_CONFIGS)")
    args = parser.parse_intermixed_args()
    args.packages = args.packages or list(BUILDERS)
    if unknown := set(args.packages) - set(BUILDERS):
        parser.error(f"unknown package(s) {', '.join(sorted(unknown))}; choose from {', '.join(BUILDERS)}")
    cuda = args.device == "cuda"
    # Import only: the children then share the imports, and no OpenMP pool (nor CUDA context) exists yet
    # to break in a fork. torch._dynamo is what building an optimizer imports first (about 4 s).
    for module in ("torch._dynamo", *(m for p in args.packages for m in PRELOAD[p])):
        importlib.import_module(module)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_training_") as SCRATCH:
        for package in args.packages:
            for side, batch in GPU_SIZES[package] if cuda else [(0, 0)]:
                key = f"{package}@{side}" if cuda and len(GPU_SIZES[package]) > 1 else package
                results[key] = {}
                for config in GPU_CONFIGS if cuda else CONFIGS:
                    start = time.perf_counter()
                    r = results[key][config] = run_forked(measure, package, config, args.steps, args.quick,
                                                          args.device, side, batch)
                    print(f"  training {key}, {config}: {r['steps_per_s']:.2f} steps/s, {r['peak_mb']:.0f} MiB "
                          f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
        if cuda and "abpn_retouch" in args.packages:
            batch, r = largest_batch("abpn_retouch", "AMP bf16", 2048)
            results[LARGEST_ABPN_BATCH] = {"batch": batch, **r}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
