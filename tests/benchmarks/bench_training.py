"""Training throughput of each package on CPU: steps/s and peak memory in four configurations.

One step is what the package's trainer does for one batch: forward, the package's losses, backward and
optimizer step through ``shared.amp.MixedPrecision`` (gradient clipping included); for the GANs the
discriminator step and then the generator step. Where the package has a step function it is called
(``neuropbr.train.Trainer.train_step``, ``alphagan_matting``'s ``train_step``,
``gansformer_inpaint``'s ``Trainer.train_step``); deblur_unet and abpn_retouch run the step inline in
their loops, so the loop body is repeated here with the package's own model, loss, optimizer and AMP.

Configurations: ``fp32``, ``bf16`` (autocast), and each with ``channels_last`` (models and 4-D batch
tensors converted; NeuroPBR's 5-D views reach its convolutions through channels-last weights).

``python -m tests.benchmarks.bench_training STEPS [--quick] [PACKAGE ...]`` (default: all five) imports
the packages once, then forks one child per package and configuration: clean peak memory without
paying the interpreter start (about 10 s with these imports) twenty times. Each child builds
everything, runs the warm-up step and STEPS timed steps, and reports the median. The last stdout
line is JSON.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from tests.benchmarks.common import median_seconds, run_forked

CONFIGS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32 + channels_last": ("fp32", True),
           "bf16 + channels_last": ("bf16", True)}
WARMUP = 1  # the first step creates and caches the oneDNN kernels for these shapes

Step = Callable[[], object]
# The default teacher (ResNet-50 at stride 1, ViT 2048 × 4, 266 M parameters) with its 6-layer
# discriminator needs 256² views at least and takes seconds per step there: too slow for this section.
NEUROPBR_PRESET = "quick_test"
SCRATCH: str | None = None  # the run's temporary folder (set by main; the forked children write inside)


def _cl(x: torch.Tensor, on: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if on and x.dim() == 4 else x


def _cl_model(model: torch.nn.Module, on: bool) -> torch.nn.Module:
    # In place on the same Parameter objects, so optimizers built before this still hold them.
    return model.to(memory_format=torch.channels_last) if on else model


def deblur_unet(precision: str, channels_last: bool, size: int, batch: int) -> Step:
    from deblur_unet.config import TrainConfig
    from deblur_unet.data import SyntheticDeblurDataset
    from deblur_unet.losses import CharbonnierLoss
    from deblur_unet.model import DeblurUNet
    from shared.amp import MixedPrecision

    cfg = TrainConfig(synthetic=True, patch_size=size, batch_size=batch, precision=precision, device="cpu")
    model = _cl_model(DeblurUNet(base_ch=cfg.base_ch, residual=cfg.residual), channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = MixedPrecision(cfg.precision, "cpu")
    criterion = CharbonnierLoss(cfg.charbonnier_eps)
    data = SyntheticDeblurDataset(batch, size, training=True, seed=cfg.seed)
    blur, sharp = (_cl(torch.stack(t), channels_last) for t in zip(*(data[i] for i in range(batch)), strict=True))

    def step():  # deblur_unet.trainer._train's loop body
        with amp.autocast():
            loss = criterion(model(blur), sharp)
        amp.backward_and_step(loss, optimizer, max_grad_norm=cfg.grad_clip or None)

    return step


def abpn_retouch(precision: str, channels_last: bool, size: int, batch: int) -> Step:
    from abpn_retouch.config import TrainConfig
    from abpn_retouch.losses import LossWeights, RetouchLoss
    from abpn_retouch.model import ABPN
    from abpn_retouch.train import build_dataset, model_config
    from shared.amp import MixedPrecision

    cfg = TrainConfig(synthetic=True, synthetic_count=1, synthetic_size=size, patch_size=size, stride=size,
                      batch_size=batch, precision=precision, device="cpu")
    data = build_dataset(cfg)
    items = [data[i % len(data)] for i in range(batch)]
    inputs, targets, masks = (_cl(torch.stack([it[k] for it in items]), channels_last)
                              for k in ("input", "target", "mask"))
    model = _cl_model(ABPN(model_config(cfg)), channels_last).train()
    weights = LossWeights(cfg.w_masked_l1, cfg.w_global_l1, cfg.w_edge, cfg.w_high_freq, cfg.w_perceptual,
                          cfg.w_dice)
    criterion = _cl_model(RetouchLoss(weights, cfg.vgg_weights or None, cfg.perceptual_size, quiet=True),
                          channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    amp = MixedPrecision(precision, "cpu")

    def step():  # abpn_retouch.train._train's loop body
        with amp.autocast():
            output, mask_logits = model(inputs)
            loss, _ = criterion(output, targets, mask_logits, masks)
        amp.backward_and_step(loss, optimizer, max_grad_norm=cfg.max_grad_norm or None)

    return step


def neuropbr(precision: str, channels_last: bool, size: int, batch: int) -> Step:
    from neuropbr.train import Trainer
    from neuropbr.train_config import load_config

    cfg = load_config(NEUROPBR_PRESET)
    cfg.data.synthetic, cfg.data.synthetic_image_size, cfg.data.synthetic_num_samples = True, size, batch + 1
    cfg.data.batch_size, cfg.data.num_workers, cfg.data.val_ratio = batch, 0, 0.0
    cfg.training.device, cfg.training.precision = "cpu", precision
    cfg.training.checkpoint_dir = tempfile.mkdtemp(prefix="neuropbr_", dir=SCRATCH)
    trainer = Trainer(cfg.finalize(), None, None)
    for model in (trainer.generator, trainer.discriminator):
        _cl_model(model, channels_last)
    items = [trainer.dataset[i] for i in range(batch)]
    inputs, targets = (_cl(torch.stack(t), channels_last) for t in zip(*items, strict=True))
    return lambda: trainer.train_step(inputs, targets, gan_active=True)


def alphagan_matting(precision: str, channels_last: bool, size: int, batch: int) -> Step:
    from alphagan_matting.dataset import collate
    from alphagan_matting.schemas import Config, MattingBatch
    from alphagan_matting.train_pipeline.steps import TrainParts, train_step
    from alphagan_matting.train_pipeline.trainer import RunOptions, build_datasets
    from alphagan_matting.utils import build_discriminator, build_generator
    from shared.amp import MixedPrecision

    cfg = Config()
    cfg.train.crop_size = cfg.test.resize_size = size
    cfg.general.batch_size = batch
    train_set, _ = build_datasets(cfg, RunOptions(synthetic=True, synthetic_size=batch))
    raw = collate([train_set[i] for i in range(batch)])
    data = MattingBatch(**{k: _cl(v, channels_last) for k, v in MattingBatch.from_dict(raw).__dict__.items()})
    # What alphagan_matting.train_pipeline.trainer._train assembles (it has no builder function for it).
    t = cfg.train
    generator = _cl_model(build_generator(cfg.model), channels_last).train()
    discriminator = _cl_model(build_discriminator(cfg.model), channels_last).train()
    opt_g = torch.optim.AdamW(generator.parameters(), lr=t.G.scheduler.start_lr, weight_decay=t.optimizer.weight_decay)
    opt_d = torch.optim.AdamW(discriminator.parameters(), lr=t.D.scheduler.start_lr,
                              weight_decay=t.optimizer.weight_decay)
    sched_g = torch.optim.lr_scheduler.CyclicLR(opt_g, base_lr=t.G.scheduler.start_lr, max_lr=t.G.scheduler.end_lr,
                                                step_size_up=t.G.scheduler.step_size_up, cycle_momentum=False)
    sched_d = torch.optim.lr_scheduler.CyclicLR(opt_d, base_lr=t.D.scheduler.start_lr, max_lr=t.D.scheduler.end_lr,
                                                step_size_up=t.D.scheduler.step_size_up, cycle_momentum=False)
    mean = torch.tensor(cfg.general.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.general.std).view(1, 3, 1, 1)
    parts = TrainParts(generator, discriminator, opt_g, opt_d, sched_g, sched_d, MixedPrecision(precision, "cpu"),
                       MixedPrecision(precision, "cpu"), mean, std)
    return lambda: train_step(parts, data, cfg, 0, None)


def gansformer_inpaint(precision: str, channels_last: bool, size: int, batch: int) -> Step:
    from gansformer_inpaint.config import Config
    from gansformer_inpaint.training.trainer import Trainer

    cfg = Config(img_size=size, batch_size=batch, synthetic=True, synthetic_size=batch, workers=0, device="cpu",
                 precision=precision, checkpoint_dir=tempfile.mkdtemp(prefix="gansformer_", dir=SCRATCH))
    trainer = Trainer(cfg)
    for model in (trainer.gen_module, trainer.disc_module):
        _cl_model(model, channels_last)
    items = [trainer.dataset[i] for i in range(batch)]
    data = {k: _cl(torch.stack([it[k] for it in items]), channels_last) for k in ("masked", "gt", "mask")}

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


def measure(package: str, config: str, steps: int, quick: bool) -> dict:
    torch.manual_seed(0)
    precision, channels_last = CONFIGS[config]
    side, batch = SIZES[package][quick]
    start = time.perf_counter()
    step = BUILDERS[package](precision, channels_last, side, batch)
    build = time.perf_counter() - start
    seconds = median_seconds(step, steps, warmup=WARMUP)
    return {"config": config, "seconds": seconds, "steps_per_s": 1.0 / seconds, "build_s": build}


def main() -> None:
    global SCRATCH

    steps, quick = int(sys.argv[1]), "--quick" in sys.argv[2:]
    packages = [a for a in sys.argv[2:] if a != "--quick"] or list(BUILDERS)
    # Import only: the children then share the imports, and no OpenMP pool exists yet to break in a fork.
    # torch._dynamo is what building an optimizer imports first (about 4 s), once per child otherwise.
    for module in ("torch._dynamo", *(m for p in packages for m in PRELOAD[p])):
        importlib.import_module(module)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_training_") as SCRATCH:
        for package in packages:
            results[package] = {}
            for config in CONFIGS:
                start = time.perf_counter()
                r = results[package][config] = run_forked(measure, package, config, steps, quick)
                print(f"  training {package}, {config}: {r['steps_per_s']:.2f} steps/s, {r['peak_mb']:.0f} MiB "
                      f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
