"""Training of the multi-view fusion teacher: config → data → G (+ D) → checkpoints, logs, samples.

Run from the package folder as ``uv run --package neuropbr train.py ...`` (see the README for every
flag) or through the ``neuropbr-train`` console script.
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from neuropbr.data import build_dataset, input_size
from neuropbr.losses.losses import HybridLoss, gan_discriminator_loss
from neuropbr.maps import maps_for_display, maps_to_tensor, tensor_to_maps
from neuropbr.models.gan.discriminator import build_discriminator
from neuropbr.models.generator import MultiViewPBRGenerator
from neuropbr.train_config import TrainConfig, load_config
from neuropbr.utils.dataset import dataset_conversion_notes, train_val_split
from neuropbr.utils.metrics import MetricAccumulator
from shared.amp import MixedPrecision, NonFiniteError
from shared.checkpoint import CheckpointManager, save_checkpoint
from shared.device import resolve_device
from shared.distributed import (
    all_reduce_mean,
    cleanup_distributed,
    init_distributed,
    is_main_process,
    unwrap_model,
    wrap_ddp,
)
from shared.errors import ConfigError
from shared.images import make_grid, save_image
from shared.sampler import EpochSampler
from shared.seed import make_generator, seed_everything, seed_worker
from shared.tracking import TRACKERS
from shared.training import Budget, RunningMeans, TrainingRun, add_run_arguments, validation_line

KIND = "neuropbr_teacher"

__all__ = ["KIND", "MultiViewPBRGenerator", "Trainer", "build_arg_parser", "main", "open_run", "resolve_config"]


# --------------------------------------------------------------------------------------------- CLI


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the NeuroPBR multi-view fusion teacher.")
    p.add_argument("--config", default=None,
                   help="preset (default, quick_test, lightweight, high_quality, fast_iteration, normal_focused) "
                        "or a .py file defining get_config()")
    p.add_argument("--input-dir", help="input/ folder (clean/, dirty/, render_metadata.json)")
    p.add_argument("--output-dir", help="output/ folder of material map folders")
    p.add_argument("--metadata-path", help="default: {input-dir}/render_metadata.json")
    p.add_argument("--synthetic", action="store_true", help="procedural materials rendered on the fly (no dataset)")
    p.add_argument("--synthetic-samples", type=int, help="number of synthetic materials (data.synthetic_num_samples)")
    p.add_argument("--render-curriculum", type=int, choices=[0, 1, 2], help="0 clean, 1 clean+dirty, 2 dirty")
    p.add_argument("--use-dirty", action="store_true", help="legacy: same as --render-curriculum 2")
    p.add_argument("--image-size", type=int, help="side of inputs and targets (also the synthetic size)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--num-workers", type=int, help="DataLoader workers (data.num_workers)")
    p.add_argument("--checkpoint-dir", help="where checkpoints, samples and logs/ go (training.checkpoint_dir)")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], help="auto = CUDA → MPS → CPU")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                   help="default: fp16 on CUDA when training.use_amp, else fp32")
    p.add_argument("--tracker", choices=list(TRACKERS), help="default tensorboard (wandb if training.use_wandb)")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (bit-exact on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the generator (Linux + CUDA)")
    p.add_argument("--pretrained", help="local torchvision ResNet weights for the encoder")
    p.add_argument("--lr", type=float, help="generator learning rate (optimizer.g_lr)")
    p.add_argument("--val-ratio", type=float)
    p.add_argument("--max-steps-per-epoch", type=int, help="cap batches per epoch (smoke tests)")
    add_run_arguments(p)
    return p


def resolve_config(args: argparse.Namespace, resume_state: dict | None = None) -> TrainConfig:
    """Base config (the checkpoint's on resume, else ``--config``) with the given flags on top."""
    if resume_state is not None:
        if args.config:
            print(f"note: --config {args.config} ignored: resuming uses the checkpoint's config", file=sys.stderr)
        cfg = TrainConfig.from_dict(resume_state.get("config") or {})
        # The encoder's weights are in the checkpoint (older checkpoints still name the pretrained file).
        cfg.model.pretrained_path = None
    else:
        cfg = load_config(args.config)
    d, t = cfg.data, cfg.training
    overrides: list[tuple[Any, str, Any]] = [
        (d, "input_dir", args.input_dir), (d, "output_dir", args.output_dir),
        (d, "metadata_path", args.metadata_path), (d, "batch_size", args.batch_size),
        (d, "num_workers", args.num_workers), (d, "render_curriculum", args.render_curriculum),
        (d, "synthetic_num_samples", args.synthetic_samples), (d, "val_ratio", args.val_ratio),
        (t, "epochs", args.epochs), (t, "checkpoint_dir", args.checkpoint_dir), (t, "device", args.device),
        (t, "precision", args.precision), (t, "tracker", args.tracker), (t, "seed", args.seed),
        (cfg.model, "pretrained_path", args.pretrained), (cfg.optimizer, "g_lr", args.lr),
    ]
    for section, key, value in overrides:
        if value is not None:
            setattr(section, key, value)
    if args.input_dir and not args.metadata_path:
        d.metadata_path = None  # follow the new input dir: {input_dir}/render_metadata.json
    if args.use_dirty:
        d.use_dirty_renders = True
        d.render_curriculum = 2
    if args.synthetic:
        d.synthetic = True
    if args.image_size is not None:
        d.image_size = args.image_size
        d.synthetic_image_size = args.image_size
    if args.deterministic:
        t.deterministic = True
    if args.compile:
        t.compile = True
    return cfg.finalize()


# --------------------------------------------------------------------------------------------- pieces


def checkpoint_manager(cfg: TrainConfig) -> CheckpointManager:
    """The spec's names: ``best_model.pth``, ``checkpoint_epoch_NNNN.pth``, plus ``latest.pth``."""
    t = cfg.training
    return CheckpointManager(t.checkpoint_dir, save_every_n_epochs=0 if t.save_best_only else t.save_every_n_epochs,
                             keep_last=t.keep_last_n, monitor="val_loss", mode="min", best_name="best_model.pth")


def open_run(args: argparse.Namespace) -> tuple[TrainingRun, TrainConfig]:
    """The run and its config: a resumed checkpoint's config with the given flags on top, else ``--config``'s.

    A fresh run and ``--resume auto`` find their folder from the flags; a resumed run writes where its
    own config says (unless ``--checkpoint-dir`` is given).
    """
    fresh = resolve_config(args) if args.resume in (None, "auto") else None
    manager = checkpoint_manager(fresh) if fresh else CheckpointManager(Path(args.resume).parent)
    run = TrainingRun(KIND, manager, resume=args.resume, overwrite=args.overwrite,
                      budget=Budget(args.max_minutes, args.max_steps))
    cfg = resolve_config(args, run.checkpoint) if run.resuming else fresh
    run.manager = checkpoint_manager(cfg)
    return run, cfg


def make_optimizer(kind: str, params, lr: float, betas: Sequence[float], weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Per-epoch schedule: cosine with linear warmup to ``scheduler_min_lr``, step, plateau, or none."""
    o, epochs = cfg.optimizer, cfg.training.epochs
    if o.scheduler == "cosine":
        base = optimizer.param_groups[0]["lr"]
        floor = min(o.scheduler_min_lr / base, 1.0) if base > 0 else 0.0
        warmup = max(0, o.scheduler_warmup_epochs)

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            progress = (epoch - warmup) / max(1, epochs - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.step_size, gamma=o.gamma)
    if o.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=o.patience, factor=o.factor,
                                                          min_lr=o.scheduler_min_lr)
    return None


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.training.precision:
        return cfg.training.precision
    return "fp16" if cfg.training.use_amp and device.type == "cuda" else "fp32"


def resolve_tracker(cfg: TrainConfig) -> str:
    t = cfg.training
    if t.tracker:
        return t.tracker
    return "wandb" if t.use_wandb else "tensorboard" if t.use_tensorboard else "none"


# Training items averaged into the mean-maps baseline: enough for a stable mean, few enough to load fast.
MEAN_MAPS_ITEMS = 64
# The console's validation line: the maps' headline metrics, each beside the baselines'.
VAL_LINE_KEYS = ("psnr_albedo", "psnr_roughness", "psnr_metallic", "normal_angle_mean")


def mean_maps(dataset, indices: Sequence[int], limit: int = MEAN_MAPS_ITEMS) -> dict[str, torch.Tensor]:
    """The trivial baseline: each map's per-channel mean over training items, ``(C, 1, 1)`` each.

    Per channel, not per pixel: a pixel-wise mean of unrelated textures is a blur of them, no better a
    guess anywhere. The normal is the mean vector renormalised (close to flat for most materials).
    ``limit`` items are taken evenly spread over ``indices``.
    """
    if not indices:
        raise ConfigError("mean maps need at least one training item")
    count = min(limit, len(indices))
    picked = [indices[(j * len(indices)) // count] for j in range(count)]
    sums: dict[str, torch.Tensor] = {}
    for i in picked:
        maps = tensor_to_maps(dataset[i][1].float())
        for k, v in maps.items():
            sums[k] = sums.get(k, 0) + v.mean(dim=(-2, -1), keepdim=True)
    out = {k: v / len(picked) for k, v in sums.items()}
    out["normal"] = torch.nn.functional.normalize(out["normal"], dim=0)
    return out


def constant_maps(maps: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``maps`` ``(C, 1, 1)`` broadcast to the shapes of ``like`` ``(B, C, H, W)``."""
    return {k: maps[k].to(like[k].device, like[k].dtype).expand_as(like[k]) for k in like}


def flat_normal_like(normal: torch.Tensor) -> torch.Tensor:
    flat = torch.zeros_like(normal)
    flat[:, 2] = 1.0
    return flat


def error_heatmap(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean absolute error over all maps of one sample ``(3, H, W)``, as a blue→red colour map."""
    p, t = maps_for_display(pred), maps_for_display(target)
    err = torch.stack([(p[k] - t[k]).abs().mean(dim=0) for k in p]).mean(dim=0)
    e = (err / err.max().clamp_min(1e-6)).clamp(0, 1)
    return torch.stack([e.clamp(0, 1), (1 - (2 * e - 1).abs()), (1 - e)])


# Columns of the sample grid (two short lines each, so they fit above small cells).
GRID_COLUMNS = ("view 0", "view 1", "view 2", "albedo\npred", "albedo\ngt", "rough.\npred", "rough.\ngt",
                "metal.\npred", "metal.\ngt", "normal\npred", "normal\ngt", "error")


def sample_rows(views: torch.Tensor, pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                mean: torch.Tensor, std: torch.Tensor, limit: int = 4) -> list[list[torch.Tensor]]:
    """Grid rows: view 0 | 1 | 2 | albedo pred | gt | roughness pred | gt | metallic … | normal … | error."""
    rows = []
    p, t = maps_for_display(pred), maps_for_display(target)
    raw = (views.float().cpu() * std + mean).clamp(0, 1)
    for b in range(min(limit, views.shape[0])):
        row = [raw[b, i] for i in range(3)]
        for key in ("albedo", "roughness", "metallic", "normal"):
            row += [p[key][b].float().cpu(), t[key][b].float().cpu()]
        row.append(error_heatmap({k: v[b] for k, v in pred.items()}, {k: v[b] for k, v in target.items()}).cpu())
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- training


class Trainer:
    """One training run (fresh or resumed through ``run``)."""

    def __init__(self, cfg: TrainConfig, run: TrainingRun | None = None, max_steps_per_epoch: int | None = None) -> None:
        self.cfg, self.max_steps = cfg, max_steps_per_epoch
        t = cfg.training
        self.dist = init_distributed(device=t.device)
        self.device = resolve_device(t.device)
        seed_everything(t.seed + self.dist.rank, deterministic=t.deterministic)
        self.precision = resolve_precision(cfg, self.device)

        # Data first: a bad dataset fails before anything is written.
        self.dataset = build_dataset(cfg)
        if is_main_process():
            # Said once per run, so that one grayscale or RGBA file among many is no surprise.
            for line in dataset_conversion_notes(self.dataset):
                print(f"note: {line}", file=sys.stderr)
        self.train_idx, self.val_idx = train_val_split(self.dataset.group_keys, cfg.data.val_ratio, t.seed)
        if not self.train_idx:
            raise ConfigError("the train split is empty; lower data.val_ratio or add samples")
        self.sampler = EpochSampler(self.train_idx, seed=t.seed)
        self.mean_maps = mean_maps(self.dataset, self.train_idx) if self.val_idx else None
        self.mean = torch.tensor(cfg.transform.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.transform.std).view(1, 3, 1, 1)
        self.ckpt_dir = Path(t.checkpoint_dir)

        # A resumed run's weights come from its checkpoint (no "random initialisation" note).
        self.generator = MultiViewPBRGenerator(cfg, quiet=run is not None and run.resuming).to(self.device)
        self.use_gan = bool(cfg.model.use_gan and cfg.loss.w_gan > 0)
        self.discriminator = build_discriminator(cfg.model).to(self.device) if self.use_gan else None
        o = cfg.optimizer
        self.opt_g = make_optimizer(o.g_optimizer, self.generator.parameters(), o.g_lr, o.g_betas, o.g_weight_decay)
        self.opt_d = (make_optimizer(o.d_optimizer, self.discriminator.parameters(), o.d_lr, o.d_betas,
                                     o.d_weight_decay) if self.discriminator is not None else None)
        self.sched_g = make_scheduler(self.opt_g, cfg)
        self.sched_d = make_scheduler(self.opt_d, cfg) if self.opt_d is not None else None
        # Both guards watch both models: G's step runs D's forward too, and either can poison D's statistics.
        models = [self.generator, self.discriminator]
        self.amp_g = MixedPrecision(self.precision, self.device, modules=models)
        self.amp_d = MixedPrecision(self.precision, self.device, modules=models) if self.use_gan else None
        self.criterion = HybridLoss(cfg.loss, cfg.model.discriminator_use_sigmoid)

        self.run = run or TrainingRun(KIND, checkpoint_manager(cfg))
        self.start_epoch, self.global_step, self.skip_batches = 0, 0, 0
        self.means = RunningMeans()
        if self.run.resuming:
            info = self.run.restore(self._stateful())
            self.start_epoch, self.global_step = info.epoch, info.global_step
            self.skip_batches = int(info.extra.get("batch_in_epoch", 0))
            self.means.load_state_dict(info.extra.get("running", {}))
            if is_main_process():
                where = f" (batch {self.skip_batches})" if self.skip_batches else ""
                print(f"Resumed from {self.run.resume_path}: {info.epoch} epoch(s) done{where}, step {info.global_step}")

        if t.compile:
            if platform.system() == "Linux" and self.device.type == "cuda":
                self.generator = torch.compile(self.generator)
            elif is_main_process():
                print("note: training.compile ignored (torch.compile is used on Linux + CUDA only)", file=sys.stderr)
        self.generator = wrap_ddp(self.generator, self.device)
        if self.discriminator is not None:
            self.discriminator = wrap_ddp(self.discriminator, self.device)
        self.tracker = None
        self.no_val_noted = False

    def _stateful(self) -> dict[str, Any]:
        return {
            "generator": self.generator, "discriminator": self.discriminator,
            "optimizer_g": self.opt_g, "optimizer_d": self.opt_d,
            "scheduler_g": self.sched_g, "scheduler_d": self.sched_d,
            "amp_g": self.amp_g, "amp_d": self.amp_d,
        }

    # -- data

    def _loader(self, sampler: EpochSampler, shuffle_seed: int, drop_last: bool) -> DataLoader:
        d = self.cfg.data
        workers = max(0, d.num_workers)
        if d.synthetic and input_size(self.cfg) <= 256:
            workers = 0  # small synthetic items are cached in this process; workers would regenerate them
        kwargs: dict[str, Any] = {}
        if workers > 0:
            kwargs.update(persistent_workers=False, prefetch_factor=d.prefetch_factor, worker_init_fn=seed_worker)
        return DataLoader(self.dataset, batch_size=d.batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                          pin_memory=d.pin_memory and self.device.type == "cuda", drop_last=drop_last,
                          generator=make_generator(shuffle_seed), **kwargs)

    def train_loader(self, epoch: int, skip: int = 0) -> DataLoader:
        """This rank's batches of ``epoch`` after its first ``skip``: a resumed epoch goes on at the next batch."""
        bs = self.cfg.data.batch_size
        self.sampler.set_epoch(epoch, start=skip * bs)
        return self._loader(self.sampler, self.cfg.training.seed * 1009 + epoch, drop_last=self.sampler.per_rank > bs)

    def val_loader(self) -> DataLoader | None:
        return self._loader(EpochSampler(self.val_idx, shuffle=False), 0, drop_last=False) if self.val_idx else None

    # -- steps

    def _lr(self) -> float:
        return float(self.opt_g.param_groups[0]["lr"])

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, gan_active: bool) -> dict[str, float] | None:
        """One G step (after ``d_steps_per_g_step`` D steps when the GAN is on); ``None`` when G's was skipped."""
        cfg = self.cfg
        inputs = inputs.to(self.device, non_blocking=True)
        target = tensor_to_maps(targets.to(self.device, non_blocking=True))
        out: dict[str, float] = {}
        with self.amp_g.autocast():
            pred = self.generator(inputs)
        if gan_active:
            real = maps_to_tensor(target)
            fake = maps_to_tensor(pred).detach()
            for _ in range(cfg.training.d_steps_per_g_step):
                self.opt_d.zero_grad(set_to_none=True)
                with self.amp_d.autocast():
                    logits = self.discriminator(torch.cat([real, fake.to(real.dtype)]))
                    d_real, d_fake = logits.chunk(2)
                    d_loss = cfg.loss.w_discriminator * gan_discriminator_loss(
                        d_real, d_fake, cfg.loss.gan_loss_type, cfg.model.discriminator_use_sigmoid)
                self.amp_d.backward_and_step(d_loss, self.opt_d, max_grad_norm=cfg.training.grad_clip_norm)
                out["D_loss"] = float(d_loss.detach())
        fake_out = None
        with self.amp_g.autocast():
            if gan_active:
                disc = unwrap_model(self.discriminator)
                disc.requires_grad_(False)
                fake_out = disc(maps_to_tensor(pred))
            total, parts = self.criterion(pred, target, fake_out)
        result = self.amp_g.backward_and_step(total, self.opt_g, max_grad_norm=cfg.training.grad_clip_norm)
        if gan_active:
            unwrap_model(self.discriminator).requires_grad_(True)
        if not result.stepped:
            return None
        out["G_loss"] = float(parts["total"])
        out.update({k: float(v) for k, v in parts.items() if k != "total"})
        if result.grad_norm is not None:
            out["grad_norm_g"] = result.grad_norm
        return out

    @torch.no_grad()
    def validate(self) -> tuple[float | None, dict[str, float], list | None]:
        """Validation loss, the model's metrics, and a first batch for the image grid.

        The baselines' metrics on the same batches land in ``self.val_baselines``: ``mean_maps`` (the
        training maps' per-channel means) and ``flat_normal`` (normal (0, 0, 1); angles only).
        """
        self.val_baselines = {}
        loader = self.val_loader()
        if loader is None:
            return None, {}, None
        gen = self.generator
        gen.eval()
        acc, loss_sum, batches, first = MetricAccumulator(), 0.0, 0, None
        mean_acc, flat_acc = MetricAccumulator(), MetricAccumulator()
        for i, (inputs, targets) in enumerate(loader):
            if self.cfg.training.val_batches is not None and i >= self.cfg.training.val_batches:
                break
            inputs = inputs.to(self.device)
            target = tensor_to_maps(targets.to(self.device))
            with self.amp_g.autocast():
                pred = gen(inputs)
                total, _ = self.criterion(pred, target)
            pred = {k: v.float() for k, v in pred.items()}
            loss_sum += float(total)
            batches += 1
            acc.update(pred, target)
            guess = constant_maps(self.mean_maps, target)
            mean_acc.update(guess, target)
            flat_acc.update(guess | {"normal": flat_normal_like(target["normal"])}, target)
            if first is None:
                first = (inputs.cpu(), {k: v.cpu() for k, v in pred.items()}, {k: v.cpu() for k, v in target.items()})
        gen.train()
        val_loss = all_reduce_mean(loss_sum / max(batches, 1))
        metrics = {k: all_reduce_mean(v) for k, v in acc.compute().items()}
        self.val_baselines = {
            "mean_maps": {k: all_reduce_mean(v) for k, v in mean_acc.compute().items()},
            "flat_normal": {k: all_reduce_mean(v) for k, v in flat_acc.compute().items() if k.startswith("normal_")},
        }
        return val_loss, metrics, first

    def log_validation(self, title: str, val_loss: float, metrics: dict[str, float]) -> None:
        """Tracker: ``val/loss``, ``val/<metric>`` and ``val/<metric>_<baseline>``; console: the headline."""
        line = self.run.log_validation(metrics, self.val_baselines, self.global_step)
        self.tracker.log_metrics({"val/loss": val_loss}, self.global_step)
        if is_main_process():
            short = {k: metrics[k] for k in VAL_LINE_KEYS if k in metrics}
            print(f"[Validation] {title} - Loss: {val_loss:.3f}  "
                  + (validation_line(short, self.val_baselines) if short else line))

    def validate_at_stop(self, state: dict[str, Any], where: str) -> None:
        """A budget stop validates (after ``state`` was taken, so resume is unchanged) and writes
        ``best_model.pth`` when this is the best validation so far: a short run keeps its best model."""
        if self.run.stop_reason == "signal":
            return
        val_loss, metrics, _ = self.validate()
        if val_loss is None:
            return
        self.log_validation(where, val_loss, metrics)
        manager = self.run.manager
        if manager.is_better(val_loss):
            manager.best_metric = float(val_loss)
            if is_main_process():
                save_checkpoint(manager.best_path, manager.stamp(state))
                print(f"Saved best model: {manager.best_path}")

    # -- checkpoints, logs, images

    def stored_config(self) -> dict[str, Any]:
        """The config checkpoints carry: ``model.pretrained_path`` cleared, since the encoder's weights
        are in the checkpoint and ``MultiViewPBRGenerator(ckpt['config'])`` (the spec's inline-inference
        snippet) would otherwise need that file on every machine that loads it."""
        config = self.cfg.to_dict()
        config["model"]["pretrained_path"] = None
        return config

    def _state(self, epoch_done: int, batch_in_epoch: int) -> dict[str, Any]:
        state = self.run.state(epoch=epoch_done, global_step=self.global_step, objects=self._stateful(),
                               config=self.stored_config(),
                               extra={"batch_in_epoch": batch_in_epoch, "running": self.means.state_dict()})
        # The spec's export snippet reads these keys; torch.save stores each tensor's storage once.
        state["generator_state_dict"] = state["state"]["generator"]
        if "discriminator" in state["state"]:
            state["discriminator_state_dict"] = state["state"]["discriminator"]
        return state

    def log_train(self, out: dict[str, float]) -> None:
        metrics = {f"train/{k}": v for k, v in out.items()} | {"train/lr_g": self._lr()}
        if self.opt_d is not None:
            metrics["train/lr_d"] = float(self.opt_d.param_groups[0]["lr"])
        self.tracker.log_metrics(metrics, self.global_step)

    def log_images(self, epoch_done: int, sample) -> None:
        if sample is None or not is_main_process():
            return
        views, pred, target = sample
        rows = sample_rows(views, pred, target, self.mean, self.std)
        grid = make_grid(rows, labels=GRID_COLUMNS)
        save_image(self.ckpt_dir / "samples" / f"epoch_{epoch_done:04d}.png", grid)
        self.tracker.log_image("val/comparison", grid, self.global_step)
        self.tracker.log_image("val/error_heatmap", make_grid([[r[-1]] for r in rows]), self.global_step)
        self.tracker.log_image("val/input_views", make_grid([r[:3] for r in rows]), self.global_step)

    # -- loop

    def fit(self) -> int:
        """Train to ``training.epochs``; returns the exit status (0, or ``EXIT_PREEMPTED`` after a signal)."""
        cfg, t = self.cfg, self.cfg.training
        try:
            tracker_name = resolve_tracker(cfg)
            if is_main_process():
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                n_params = sum(p.numel() for p in unwrap_model(self.generator).parameters()) / 1e6
                src = "synthetic" if cfg.data.synthetic else cfg.data.input_dir
                # gan_start_epoch counts the epochs before the GAN; epochs print 1-based.
                print(f"NeuroPBR teacher: {cfg.model.encoder_type}/{cfg.model.encoder_backbone} ({n_params:.1f}M params), "
                      f"GAN {'on from epoch ' + str(t.gan_start_epoch + 1) if self.use_gan else 'off'}, data {src}: "
                      f"{len(self.train_idx)} train / {len(self.val_idx)} val at {input_size(cfg)}px, "
                      f"device {self.device}, precision {self.precision}, tracker {tracker_name}")
            self.tracker = self.run.open_tracker(tracker_name, self.ckpt_dir / "logs", project=t.wandb_project,
                                                 run_name=t.wandb_run_name, config=cfg.to_dict())
            with self.run:
                for epoch in range(self.start_epoch, t.epochs):
                    status = self.run_epoch(epoch)
                    if status is not None:
                        return status
            return 0
        finally:
            cleanup_distributed()

    def run_epoch(self, epoch: int) -> int | None:
        t, run = self.cfg.training, self.run
        main = is_main_process()
        epoch_no = epoch + 1
        skip, self.skip_batches = self.skip_batches, 0
        loader = self.train_loader(epoch, skip)
        gan_active = self.use_gan and epoch >= t.gan_start_epoch
        self.generator.train()
        total = len(loader) if self.max_steps is None else max(0, min(len(loader), self.max_steps - skip))
        bar = tqdm(loader, total=total, desc=f"Epoch {epoch_no}", disable=not main, dynamic_ncols=True, file=sys.stdout)
        started, last, logged = time.time(), None, False
        for batch_index, (inputs, targets) in enumerate(bar, start=skip):
            if self.max_steps is not None and batch_index >= self.max_steps:
                break
            try:
                out = self.train_step(inputs, targets, gan_active)
            except NonFiniteError as exc:
                bar.close()
                # Resumable at this batch; the skipped steps before it changed no weights.
                raise run.diverged(exc, self._state(epoch, batch_index)) from None
            if out is not None:
                self.global_step += 1
                self.means.add(out)
                last = out
                bar.set_postfix({k: f"{v:.3f}" for k, v in self.means.local().items() if k in ("G_loss", "D_loss")})
                if self.global_step % max(1, t.log_every_n_steps) == 0:
                    self.log_train(out)
                    logged = True
            if run.should_stop(self.global_step):
                bar.close()
                state, where = self._state(epoch, batch_index + 1), f"at epoch {epoch_no}, batch {batch_index + 1}"
                self.validate_at_stop(state, where)
                return run.stop(state, where)
        bar.close()
        if last is not None and not logged:
            self.log_train(last)  # an epoch shorter than log_every_n_steps still charts its train/* values
        means, self.means = self.means.reduced(), RunningMeans()
        if main:
            print(f"Epoch {epoch_no} Summary:")
            # A run resumed at the very end of an epoch brings that epoch's means with it; none: no line.
            if "G_loss" in means:
                print(f"  Generator Loss: {means['G_loss']:.3f}")
            if "D_loss" in means:
                print(f"  Discriminator Loss: {means['D_loss']:.3f}")
            print(f"  Time: {time.time() - started:.1f}s  LR: {self._lr():.2e}")
        self.tracker.log_metrics({f"epoch/{k}": v for k, v in means.items()} | {"epoch/lr_g": self._lr(), "epoch": epoch_no},
                                 self.global_step)

        val_loss, val_metrics, sample = None, {}, None
        if epoch_no % max(1, t.val_every_n_epochs) == 0 or epoch_no == t.epochs:
            val_loss, val_metrics, sample = self.validate()
            if val_loss is not None:
                self.log_validation(f"Epoch {epoch_no}", val_loss, val_metrics)
        monitor = val_loss
        if monitor is None and self.val_idx == []:
            monitor = means.get("G_loss")
            if not self.no_val_noted and main:
                print("note: no validation split (too few samples); best_model.pth follows the training loss")
                self.no_val_noted = True
        if epoch_no % max(1, t.log_images_every_n_epochs) == 0 or epoch_no == t.epochs:
            self.log_images(epoch_no, sample if sample is not None else self._train_sample())

        for sched in (self.sched_g, self.sched_d):
            if sched is None:
                continue
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(monitor if monitor is not None else means.get("G_loss", 0.0))
            else:
                with warnings.catch_warnings():
                    # D's scheduler steps in epochs before the GAN starts, when D has not stepped yet.
                    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                    sched.step()
        was_best = run.manager.is_better(monitor)
        written = run.end_epoch(self._state(epoch_no, 0), epoch_no, monitor)
        if main:
            for path in written:
                if path.name.startswith("checkpoint_epoch_"):
                    print(f"Saved checkpoint: {path}")
                elif path == run.manager.best_path and was_best:
                    print(f"Saved best model: {path}")
        return None

    @torch.no_grad()
    def _train_sample(self):
        """A fixed training batch for the image grid when there is no validation split."""
        idx = self.train_idx[: min(4, len(self.train_idx))]
        items = [self.dataset[i] for i in idx]
        inputs = torch.stack([x for x, _ in items])
        target = tensor_to_maps(torch.stack([y for _, y in items]))
        self.generator.eval()
        pred = self.generator(inputs.to(self.device))
        self.generator.train()
        return inputs, {k: v.float().cpu() for k, v in pred.items()}, target


def main(argv: Sequence[str] | None = None) -> int:
    from shared.errors import cli_entry

    return cli_entry(_main)(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.max_steps_per_epoch is not None and args.max_steps_per_epoch < 1:
        raise ConfigError("--max-steps-per-epoch must be >= 1")
    run, cfg = open_run(args)
    status = Trainer(cfg, run, args.max_steps_per_epoch).fit()
    if status:
        raise SystemExit(status)
    return 0
