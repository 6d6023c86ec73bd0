"""The epoch loop: data, models, optimizers, AMP, DDP, logging, checkpoints, exact resume."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from alphagan_matting.dataset import MattingDataset, SyntheticMattingDataset, collate, load_labels
from alphagan_matting.schemas import Config, MattingBatch, Metrics
from alphagan_matting.train_pipeline.steps import TrainParts, test_step, train_step
from alphagan_matting.transforms.trans_pipeline import build_transforms
from alphagan_matting.utils import (
    build_discriminator,
    build_generator,
    config_precision,
    load_pretrained_encoder,
)
from shared.amp import MixedPrecision, NonFiniteError, autocast, diverged, ensure_finite
from shared.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    make_training_state,
    restore_training_state,
    save_checkpoint,
)
from shared.device import resolve_device
from shared.distributed import (
    barrier,
    cleanup_distributed,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    make_sampler,
    set_sampler_epoch,
    wrap_ddp,
)
from shared.errors import ConfigError
from shared.images import make_grid, save_image_grid
from shared.preemption import EXIT_PREEMPTED, GracefulStop
from shared.seed import make_generator, seed_everything, seed_worker
from shared.tracking import create_tracker

KIND = "alphagan_matting"


@dataclass
class RunOptions:
    """Command-line settings that are not in the YAML config."""

    csv: Path | None = None
    synthetic: bool = False
    synthetic_size: int = 8
    device: str = "auto"
    precision: str | None = None  # None: the config's amp section
    deterministic: bool = False
    resume: Path | None = None
    tracker: str = "tensorboard"
    num_workers: int = 0
    pretrained: Path | None = None
    max_grad_norm: float = 0.0
    max_steps: int | None = None  # stop (and save) after this many steps in total


class ColabCheckpointManager(CheckpointManager):
    """``colab.use_colab: 1``: only two files, named by ``best_chkp_name``/``last_chkp_name`` (tight disks)."""

    def __init__(self, directory, best_name: str, last_name: str, **kwargs) -> None:
        super().__init__(directory, save_every_n_epochs=0, **kwargs)
        self.best_name, self.last_name = best_name, last_name

    @property
    def latest_path(self) -> Path:
        return self.directory / f"{self.last_name}.pth"

    @property
    def best_path(self) -> Path:
        return self.directory / f"{self.best_name}.pth"


def make_manager(cfg: Config) -> CheckpointManager:
    g = cfg.general
    if g.colab.use_colab:
        return ColabCheckpointManager(g.checkpoints_dir, g.colab.best_chkp_name, g.colab.last_chkp_name,
                                      monitor="test/SAD", mode="min")
    return CheckpointManager(g.checkpoints_dir, save_every_n_epochs=cfg.train.save_chkp_n_epoches, keep_last=0,
                             monitor="test/SAD", mode="min")


def build_datasets(cfg: Config, opts: RunOptions) -> tuple[Dataset, Dataset | None]:
    seed = cfg.general.random_seed
    train_tf, test_tf = build_transforms(cfg.train.crop_size, cfg.test.resize_size, cfg.general.mean, cfg.general.std)
    if opts.synthetic:
        size = max(cfg.train.crop_size, cfg.test.resize_size) * 5 // 4
        n_test = max(1, opts.synthetic_size // 4)
        return (SyntheticMattingDataset(opts.synthetic_size, size, train_tf, True, seed),
                SyntheticMattingDataset(n_test, size, test_tf, False, seed))
    if opts.csv is None:
        raise ConfigError("no data: pass --csv dataset/dataset_labels.csv or --synthetic")
    rows = load_labels(opts.csv)
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]
    if not train_rows:
        raise ConfigError(f"{opts.csv}: no rows with split 'train'")
    test = MattingDataset(test_rows, test_tf, False, seed) if test_rows else None
    return MattingDataset(train_rows, train_tf, True, seed), test


def epoch_indices(dataset: Dataset, sampler, seed: int, epoch: int) -> list[int]:
    """This epoch's sample order: from (seed, epoch) alone, so a resumed run replays it exactly."""
    if sampler is not None:
        set_sampler_epoch(sampler, epoch)
        return list(iter(sampler))
    return torch.randperm(len(dataset), generator=make_generator(seed * 100003 + epoch)).tolist()


def _io_grid(batch: MattingBatch, pred: torch.Tensor) -> np.ndarray:
    """composite | trimap | predicted alpha | GT alpha for the first sample."""
    return make_grid([[batch.composite[0], batch.trimap[0], pred[0].clamp(0, 1), batch.alpha[0]]])


def run_training(cfg: Config, opts: RunOptions) -> int:
    """Train; returns the process exit status (0, or ``EXIT_PREEMPTED`` after a graceful stop).

    Raises :class:`NonFiniteError` (exit status 3 through ``cli_entry``) when training diverges, after
    saving the last good state.
    """
    init_distributed(device=opts.device)
    try:
        return _train(cfg, opts)
    finally:
        cleanup_distributed()


def _train(cfg: Config, opts: RunOptions) -> int:
    device = resolve_device(opts.device)
    precision = opts.precision or config_precision(cfg)
    seed = cfg.general.random_seed
    seed_everything(seed, deterministic=opts.deterministic)
    manager = make_manager(cfg)
    if opts.resume is None and manager.latest_path.exists():
        raise ConfigError(f"{manager.latest_path}: a run already lives in {manager.directory}; pass --resume "
                          f"{manager.latest_path} to continue it, or choose another checkpoints_dir")

    train_set, test_set = build_datasets(cfg, opts)
    generator = build_generator(cfg.model)
    discriminator = build_discriminator(cfg.model)
    if opts.resume is None and is_main_process():
        print(load_pretrained_encoder(generator, opts.pretrained), file=sys.stderr)
    elif opts.pretrained is not None:
        load_pretrained_encoder(generator, opts.pretrained)
    generator.to(device)
    discriminator.to(device)

    t = cfg.train
    opt_g = torch.optim.AdamW(generator.parameters(), lr=t.G.scheduler.start_lr, weight_decay=t.optimizer.weight_decay)
    opt_d = torch.optim.AdamW(discriminator.parameters(), lr=t.D.scheduler.start_lr,
                              weight_decay=t.optimizer.weight_decay)
    sched_g = torch.optim.lr_scheduler.CyclicLR(opt_g, base_lr=t.G.scheduler.start_lr, max_lr=t.G.scheduler.end_lr,
                                                step_size_up=t.G.scheduler.step_size_up, cycle_momentum=False)
    sched_d = torch.optim.lr_scheduler.CyclicLR(opt_d, base_lr=t.D.scheduler.start_lr, max_lr=t.D.scheduler.end_lr,
                                                step_size_up=t.D.scheduler.step_size_up, cycle_momentum=False)
    # Both guards watch both models: G's step runs D's forward too, and either can poison D's statistics.
    models = [generator, discriminator]
    amp_g = MixedPrecision(precision, device, modules=models)
    amp_d = MixedPrecision(precision, device, modules=models)
    if not t.amp.use_grad_scaler:
        amp_g.scaler = amp_d.scaler = None

    objects = {"generator": generator, "discriminator": discriminator, "opt_G": opt_g, "opt_D": opt_d,
               "sched_G": sched_g, "sched_D": sched_d, "amp_G": amp_g, "amp_D": amp_d}
    start_epoch, global_step, skip_batches = 0, 0, 0
    if opts.resume is not None:
        state = load_checkpoint(opts.resume, map_location="cpu")
        info = restore_training_state(state, objects, kind=KIND, source=opts.resume)
        start_epoch, global_step = info.epoch, info.global_step
        skip_batches = int(info.extra.get("batch_in_epoch", 0))
        manager.best_metric = info.best_metric
        if is_main_process():
            print(f"resumed from {opts.resume}: epoch {start_epoch}, step {global_step}", file=sys.stderr)

    g_model = wrap_ddp(generator, device)
    d_model = wrap_ddp(discriminator, device)
    mean = torch.tensor(cfg.general.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.general.std, device=device).view(1, 3, 1, 1)
    parts = TrainParts(g_model, d_model, opt_g, opt_d, sched_g, sched_d, amp_g, amp_d, mean, std)

    sampler = make_sampler(train_set, shuffle=True, seed=seed)
    batch_size = cfg.general.batch_size
    log_dir = Path(cfg.general.log_dir)
    tracker = create_tracker(opts.tracker, log_dir, project="alphagan_matting",
                             config={**dataclasses.asdict(cfg), "world_size": get_world_size()})
    max_grad_norm = opts.max_grad_norm if opts.max_grad_norm > 0 else None
    lg = t.logging
    exit_code = 0
    try:
        with GracefulStop() as stop:
            for epoch in range(start_epoch, t.epoches):
                train_set.set_epoch(epoch)
                indices = epoch_indices(train_set, sampler, seed, epoch)
                n_batches = math.ceil(len(indices) / batch_size)
                indices = indices[skip_batches * batch_size:]
                loader = DataLoader(train_set, batch_size=batch_size, sampler=indices, collate_fn=collate,
                                    num_workers=opts.num_workers, worker_init_fn=seed_worker,
                                    pin_memory=device.type == "cuda")
                g_model.train()
                sums: dict[str, float] = {}
                count = 0
                bar = tqdm(loader, total=n_batches, initial=skip_batches, desc=f"epoch {epoch + 1}/{t.epoches}",
                           disable=not is_main_process(), leave=False, file=sys.stderr)
                batch_in_epoch = skip_batches
                for raw in bar:
                    batch = MattingBatch.from_dict(raw).to(device)
                    try:
                        losses, d_loss, pred = train_step(parts, batch, cfg, global_step, max_grad_norm)
                    except NonFiniteError as exc:
                        bar.close()
                        # Resumable at this batch; the skipped steps before it changed no weights.
                        state = make_training_state(
                            kind=KIND, epoch=epoch, global_step=global_step, objects=objects,
                            best_metric=manager.best_metric, config=dataclasses.asdict(cfg),
                            extra={"batch_in_epoch": batch_in_epoch})
                        raise diverged(exc, state, manager.latest_path) from None
                    global_step += 1
                    batch_in_epoch += 1
                    values = {"loss_G": float(losses.total), "loss_alpha": float(losses.alpha),
                              "loss_comp": float(losses.comp), "loss_gan_G": float(losses.gan)}
                    if d_loss is not None:
                        values["loss_D"] = d_loss
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()})
                    if global_step % lg.log_curr_loss_n_batches == 0:
                        tracker.log_metrics({f"train/{k}": v for k, v in values.items()}, global_step)
                    if global_step % lg.log_lr_n_batches == 0:
                        tracker.log_metrics({"lr/G": opt_g.param_groups[0]["lr"],
                                             "lr/D": opt_d.param_groups[0]["lr"]}, global_step)
                    if global_step % lg.log_io_n_batches == 0:
                        tracker.log_image("train/io", _io_grid(batch, pred), global_step)
                    out_of_steps = opts.max_steps is not None and global_step >= opts.max_steps
                    if (stop.should_stop() or out_of_steps) and batch_in_epoch < n_batches:
                        state = make_training_state(kind=KIND, epoch=epoch, global_step=global_step, objects=objects,
                                                    best_metric=manager.best_metric, config=dataclasses.asdict(cfg),
                                                    extra={"batch_in_epoch": batch_in_epoch})
                        if is_main_process():
                            save_checkpoint(manager.latest_path, state)
                            print(f"stopped at epoch {epoch + 1}, step {global_step}; saved {manager.latest_path}",
                                  file=sys.stderr)
                        # Other ranks leaving first would make torchrun kill rank 0 mid-write.
                        barrier()
                        return EXIT_PREEMPTED if stop.requested else 0
                bar.close()
                skip_batches = 0
                means = {f"train_epoch/{k}": v / max(count, 1) for k, v in sums.items()}
                test_means = evaluate_epoch(g_model, test_set, cfg, opts, device, precision, tracker, epoch)
                tracker.log_metrics({**means, **{f"test_epoch/{k}": v for k, v in test_means.items()}}, epoch + 1)
                metric = test_means.get("SAD", means.get("train_epoch/loss_G"))
                if is_main_process():
                    summary = "  ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in {**means, **test_means}.items())
                    print(f"epoch {epoch + 1}/{t.epoches}  step {global_step}  {summary}", file=sys.stderr)
                state = make_training_state(kind=KIND, epoch=epoch + 1, global_step=global_step, objects=objects,
                                            best_metric=manager.best_metric, config=dataclasses.asdict(cfg))
                ensure_finite(state, f"the end of epoch {epoch + 1}", manager.latest_path)
                manager.save(state, epoch + 1, metric=metric)
                if (epoch + 1) % t.save_chkp_n_epoches == 0 and is_main_process():
                    save_sample_grid(generator, test_set or train_set, cfg, device, precision,
                                     log_dir / "samples" / f"epoch_{epoch + 1:04d}.png")
                barrier()
                if stop.should_stop() or (opts.max_steps is not None and global_step >= opts.max_steps):
                    exit_code = EXIT_PREEMPTED if stop.requested else 0
                    break
    finally:
        tracker.finish()
    return exit_code


def evaluate_epoch(g_model, test_set, cfg: Config, opts: RunOptions, device, precision, tracker,
                   epoch: int) -> dict[str, float]:
    """Mean metrics on the test split (main process only; other ranks return ``{}``)."""
    if test_set is None or not is_main_process():
        return {}
    model = g_model.module if is_distributed() else g_model
    model.eval()
    loader = DataLoader(test_set, batch_size=cfg.general.batch_size, shuffle=False, collate_fn=collate,
                        num_workers=opts.num_workers)
    tl = cfg.test.logging
    all_metrics: list[Metrics] = []
    n_batches = len(loader)
    for i, raw in enumerate(loader, start=1):
        batch = MattingBatch.from_dict(raw).to(device)
        metrics, pred = test_step(model, batch, autocast(device, precision))
        all_metrics.extend(metrics)
        step = epoch * n_batches + i
        if i % tl.log_curr_mets_n_batches == 0:
            batch_mean = {k: float(np.mean([m.as_dict()[k] for m in metrics])) for k in metrics[0].as_dict()}
            tracker.log_metrics({f"test/{k}": v for k, v in batch_mean.items()}, step)
        if i % tl.log_io_n_batches == 0:
            tracker.log_image("test/io", _io_grid(batch, pred), step)
    model.train()
    return {k: float(np.mean([m.as_dict()[k] for m in all_metrics])) for k in all_metrics[0].as_dict()}


@torch.no_grad()
def save_sample_grid(generator, dataset, cfg: Config, device, precision, path: Path, n: int = 4) -> None:
    """input composite | trimap | predicted alpha | GT alpha, one row per sample."""
    generator.eval()
    rows = []
    for i in range(min(n, len(dataset))):
        batch = MattingBatch.from_dict(collate([dataset[i]])).to(device)
        with autocast(device, precision):
            pred = generator(torch.cat([batch.image, batch.trimap], dim=1)).float()
        rows.append([batch.composite[0], batch.trimap[0], pred[0].clamp(0, 1), batch.alpha[0]])
    generator.train()
    save_image_grid(path, rows)
