"""The training loop: patches in, Charbonnier loss, AdamW, early stopping, exact resume.

Everything that can differ between an uninterrupted run and a resumed one is either in the
checkpoint (weights, optimizer, AMP scaler, RNG streams, early-stopping counter, position inside a
preempted epoch) or a pure function of ``(seed, epoch, index)`` (data order, crops, augmentation).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from deblur_unet.config import TrainConfig
from deblur_unet.data import DeblurDataset, EpochSampler, SyntheticDeblurDataset, split_pairs
from deblur_unet.losses import CharbonnierLoss
from deblur_unet.metrics import psnr, ssim, to_unit_range
from deblur_unet.model import DeblurUNet, count_parameters
from shared.amp import MixedPrecision, NonFiniteError, diverged, ensure_finite
from shared.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    make_training_state,
    restore_training_state,
    save_checkpoint,
)
from shared.device import resolve_device
from shared.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    wrap_ddp,
)
from shared.errors import ConfigError, DataError, unwrap_worker_error
from shared.images import read_image, read_image_size, save_image_grid
from shared.preemption import EXIT_PREEMPTED, GracefulStop
from shared.seed import seed_everything, seed_worker
from shared.tracking import Tracker, create_tracker

KIND = "deblur_unet"
SAMPLE_ROWS = 4


# ------------------------------------------------------------------------------------------- data
def check_pairs(pairs, patch_size: int) -> None:
    """Fail before training (and before writing anything) on pairs that cannot give a patch.

    Reads only image headers (through :func:`read_image_size`, with the shared reader's guards for empty,
    non-image and decompression-bomb files), so it is cheap even for the 2,103 GoPro training pairs.
    """
    for blur_path, sharp_path in pairs:
        blur_size, sharp_size = read_image_size(blur_path), read_image_size(sharp_path)
        if blur_size != sharp_size:
            raise DataError(f"{blur_path}: size {blur_size[0]}×{blur_size[1]} differs from its sharp image "
                            f"{sharp_path} ({sharp_size[0]}×{sharp_size[1]})")
        if patch_size and min(blur_size) < patch_size:
            raise DataError(f"{blur_path}: image is {blur_size[0]}×{blur_size[1]}, smaller than the "
                            f"{patch_size}×{patch_size} patch (lower --patch-size)")


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """Training and validation datasets for the config (synthetic, GoPro or flat layout)."""
    if cfg.synthetic:
        val_size = cfg.patch_size  # synthetic scenes look alike at any size; keep validation cheap
        train = SyntheticDeblurDataset(cfg.synthetic_samples, cfg.patch_size, training=True, seed=cfg.seed)
        val = SyntheticDeblurDataset(max(2, cfg.synthetic_samples // 4), val_size, training=False, seed=cfg.seed)
        return train, val
    train_pairs, val_pairs = split_pairs(cfg.data_dir, cfg.val_fraction, cfg.seed)
    if not val_pairs:
        print("note: no validation pairs; validating on centre crops of the training pairs", file=sys.stderr)
        val_pairs = train_pairs
    check_pairs(train_pairs, cfg.patch_size)
    check_pairs(val_pairs, cfg.val_patch_size)
    train = DeblurDataset(train_pairs, cfg.patch_size, training=True, seed=cfg.seed)
    val = DeblurDataset(val_pairs, cfg.val_patch_size, training=False, seed=cfg.seed)
    return train, val


def _loader(dataset: Dataset, sampler: EpochSampler, batch_size: int, cfg: TrainConfig, device) -> DataLoader:
    # Workers are re-created every epoch (not persistent) so they see the dataset's new epoch.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      worker_init_fn=seed_worker, pin_memory=device.type == "cuda", drop_last=False)


# ------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, criterion, amp: MixedPrecision, device) -> dict[str, float]:
    """Mean ``val_loss``, ``psnr`` and ``ssim`` over the loader (averaged over ranks under DDP)."""
    model.eval()
    totals = {"val_loss": 0.0, "psnr": 0.0, "ssim": 0.0}
    count = 0
    for blur, sharp in loader:
        blur, sharp = blur.to(device), sharp.to(device)
        with amp.autocast():
            output = model(blur)
        output = output.float()
        totals["val_loss"] += float(criterion(output, sharp)) * blur.shape[0]
        out01, sharp01 = to_unit_range(output), to_unit_range(sharp)
        # Cap PSNR so one perfect image cannot make the mean infinite.
        totals["psnr"] += float(psnr(out01, sharp01).clamp(max=100.0).sum())
        totals["ssim"] += float(ssim(out01, sharp01).sum())
        count += blur.shape[0]
    model.train()
    total_count = all_reduce_mean(float(count))
    return {k: all_reduce_mean(v) / max(total_count, 1e-12) for k, v in totals.items()}


@torch.no_grad()
def save_samples(model, dataset: Dataset, path: Path, amp: MixedPrecision, device) -> Path:
    """A grid of the first validation samples, one row each: blurry input | output | sharp target."""
    model.eval()
    rows = []
    for index in range(min(SAMPLE_ROWS, len(dataset))):
        blur, sharp = dataset[index]
        with amp.autocast():
            output = model(blur.unsqueeze(0).to(device))[0].float().cpu()
        rows.append([to_unit_range(blur), to_unit_range(output), to_unit_range(sharp)])
    model.train()
    return save_image_grid(path, rows)


# ---------------------------------------------------------------------------------------- helpers
def _open_tracker(cfg: TrainConfig) -> Tracker:
    tracking_uri = None
    if cfg.tracker == "mlflow":
        # MLflow >= 3.x refuses a plain mlruns/ folder unless asked; the spec wants exactly that folder.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or Path(cfg.mlruns_dir).resolve().as_uri()
    params = dict(asdict(cfg))
    # The spec's parameter names, so runs compare with the original project's.
    params.update(learning_rate=cfg.lr, num_epochs=cfg.epochs)
    return create_tracker(cfg.tracker, run_dir=cfg.output_dir, project=cfg.experiment, run_name=cfg.run_name,
                          config=params, tracking_uri=tracking_uri)


def _log_mlflow_model(tracker: Tracker, model: DeblurUNet, best_path: Path) -> None:
    """Log the best weights with ``mlflow.pytorch.log_model`` (pickle format: any input size)."""
    import mlflow.pytorch

    model = DeblurUNet(**model.config())
    if best_path.is_file():
        model.load_state_dict(load_checkpoint(best_path)["state"]["model"])
    mlflow.pytorch.log_model(
        model.eval(), name="deblur_model", serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "deblur_unet"],
    )


def _check_fresh_run(cfg: TrainConfig, manager: CheckpointManager) -> None:
    if cfg.resume or cfg.overwrite:
        return
    if manager.latest_path.exists():
        raise ConfigError(f"{manager.latest_path} already exists; continue it with --resume "
                          f"{manager.latest_path}, or pass --overwrite, or choose another --checkpoint-dir")


# ------------------------------------------------------------------------------------------- main
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train per ``cfg``; returns a summary.

    Exits with ``EXIT_PREEMPTED`` after a SIGTERM/SIGINT save; raises :class:`NonFiniteError` (exit
    status 3 through ``cli_entry``) when training diverges, after saving the last good state.
    """
    cfg.validate()
    info = init_distributed(device=cfg.device)
    try:
        return _train(cfg, info)
    finally:
        cleanup_distributed()


def _train(cfg: TrainConfig, info: DistInfo) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    manager = CheckpointManager(cfg.checkpoint_dir, save_every_n_epochs=cfg.save_every, keep_last=cfg.keep_last,
                                monitor="val_loss", mode="min")
    _check_fresh_run(cfg, manager)
    train_set, val_set = build_datasets(cfg)

    model = DeblurUNet(base_ch=cfg.base_ch, residual=cfg.residual).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = MixedPrecision(cfg.precision, device, modules=[model])
    criterion = CharbonnierLoss(cfg.charbonnier_eps)
    objects = {"model": model, "optimizer": optimizer, "amp": amp}

    start_epoch, global_step, no_improve, resume_step, resume_loss = 0, 0, 0, 0, 0.0
    if cfg.resume:
        state = load_checkpoint(cfg.resume)
        resumed = restore_training_state(state, objects, kind=KIND, source=cfg.resume)
        start_epoch, global_step = resumed.epoch, resumed.global_step
        manager.best_metric = resumed.best_metric
        no_improve = int(resumed.extra.get("epochs_no_improve", 0))
        resume_step = int(resumed.extra.get("epoch_step", 0))
        resume_loss = float(resumed.extra.get("epoch_loss_sum", 0.0))
        if info.is_main:
            where = f" (step {resume_step} of epoch {start_epoch + 1})" if resume_step else ""
            print(f"resumed from {cfg.resume}: {start_epoch} epochs done{where}", file=sys.stderr)

    ddp_model = wrap_ddp(model, device)
    train_sampler = EpochSampler(len(train_set), shuffle=True, seed=cfg.seed, rank=info.rank,
                                 world_size=info.world_size)
    val_sampler = EpochSampler(len(val_set), shuffle=False, rank=info.rank, world_size=info.world_size)
    train_loader = _loader(train_set, train_sampler, cfg.batch_size, cfg, device)
    val_batch = cfg.batch_size if (cfg.synthetic or cfg.val_patch_size) else 1
    val_loader = _loader(val_set, val_sampler, val_batch, cfg, device)

    tracker = _open_tracker(cfg)
    if info.is_main:
        print(f"DeblurUNet(base_ch={cfg.base_ch}): {count_parameters(model) / 1e6:.2f}M parameters on {device}; "
              f"{len(train_set)} train / {len(val_set)} val samples", file=sys.stderr)
    samples_dir = Path(cfg.output_dir) / "samples"
    summary: dict[str, Any] = {"preempted": False, "early_stopped": False, "epochs_done": start_epoch}
    metrics: dict[str, float] = {}
    try:
        with GracefulStop() as stop:
            for epoch in range(start_epoch, cfg.epochs):
                skip = resume_step if epoch == start_epoch else 0
                train_set.set_epoch(epoch)
                train_sampler.set_epoch(epoch, start=skip * cfg.batch_size)
                loss_sum = resume_loss if epoch == start_epoch else 0.0
                steps = skip
                limit = cfg.max_steps_per_epoch or math.ceil(len(train_sampler.indices()) / cfg.batch_size)
                bar = tqdm(total=limit, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           disable=not info.is_main, dynamic_ncols=True, file=sys.stderr)
                try:
                    for blur, sharp in train_loader:
                        blur = blur.to(device, non_blocking=True)
                        sharp = sharp.to(device, non_blocking=True)
                        with amp.autocast():
                            loss = criterion(ddp_model(blur), sharp)
                        result = amp.backward_and_step(loss, optimizer, max_grad_norm=cfg.grad_clip or None)
                        global_step += int(result.stepped)
                        loss_sum += float(loss.detach())
                        steps += 1
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
                        if stop.should_stop():
                            state = make_training_state(
                                kind=KIND, epoch=epoch, global_step=global_step, objects=objects,
                                best_metric=manager.best_metric, config=asdict(cfg),
                                extra={"epochs_no_improve": no_improve, "epoch_step": steps,
                                       "epoch_loss_sum": loss_sum, "model_config": model.config()})
                            # Not manager.save: a partial epoch must not count as a periodic or best one.
                            if info.is_main:
                                save_checkpoint(manager.latest_path, {**state, "best_metric": manager.best_metric})
                                print(f"saved {manager.latest_path} at step {steps} of epoch {epoch + 1}; "
                                      f"resume with --resume {manager.latest_path}", file=sys.stderr)
                            # Other ranks leaving first would make torchrun kill rank 0 mid-write.
                            barrier()
                            summary["preempted"] = True
                            raise SystemExit(EXIT_PREEMPTED)
                        if steps >= limit:
                            break
                except DataError as exc:
                    raise unwrap_worker_error(exc) from None
                except NonFiniteError as exc:
                    # Resumable at this batch, like a preempted run; the skipped steps changed no weights.
                    state = make_training_state(
                        kind=KIND, epoch=epoch, global_step=global_step, objects=objects,
                        best_metric=manager.best_metric, config=asdict(cfg),
                        extra={"epochs_no_improve": no_improve, "epoch_step": steps,
                               "epoch_loss_sum": loss_sum, "model_config": model.config()})
                    raise diverged(exc, state, manager.latest_path) from None
                finally:
                    bar.close()

                train_loss = all_reduce_mean(loss_sum / max(steps, 1))
                metrics = {"train_loss": train_loss, **validate(ddp_model, val_loader, criterion, amp, device)}
                improved = manager.is_better(metrics["val_loss"])
                no_improve = 0 if improved else no_improve + 1
                tracker.log_metrics(metrics, step=epoch + 1)
                if info.is_main:
                    tqdm.write(f"epoch {epoch + 1}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                               + ("  *best*" if improved else ""), file=sys.stderr)
                    if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0:
                        grid = save_samples(model, val_set, samples_dir / f"epoch_{epoch + 1:04d}.png", amp, device)
                        tracker.log_image("samples", read_image(grid), step=epoch + 1)
                state = make_training_state(
                    kind=KIND, epoch=epoch + 1, global_step=global_step, objects=objects,
                    best_metric=manager.best_metric, config=asdict(cfg),
                    extra={"epochs_no_improve": no_improve, "model_config": model.config(), "metrics": metrics})
                ensure_finite(state, f"the end of epoch {epoch + 1}", manager.latest_path)
                manager.save(state, epoch + 1, metric=metrics["val_loss"])
                barrier()
                summary["epochs_done"] = epoch + 1
                if cfg.patience and no_improve >= cfg.patience:
                    if info.is_main:
                        print(f"early stopping: val_loss has not improved for {no_improve} epochs", file=sys.stderr)
                    summary["early_stopped"] = True
                    break
        if tracker.backend == "mlflow" and cfg.log_model and info.is_main:
            _log_mlflow_model(tracker, model, manager.best_path)
    finally:
        tracker.finish()
    summary.update(best_val_loss=manager.best_metric, last_metrics=metrics, global_step=global_step)
    return summary

