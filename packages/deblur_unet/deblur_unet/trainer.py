"""The training loop: patches in, Charbonnier loss, AdamW, early stopping, exact resume.

The run's folder, resume, stops, saves and tracker are :class:`shared.training.TrainingRun`'s. What can
differ between an uninterrupted run and a resumed one is either in the checkpoint (weights, optimizer,
AMP scaler, RNG streams, early-stopping counter, position and running loss inside a stopped epoch) or a
pure function of ``(seed, epoch, index)`` (data order, crops, augmentation).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from deblur_unet.config import TrainConfig
from deblur_unet.data import DeblurDataset, SyntheticDeblurDataset, split_pairs, to_unit_range
from deblur_unet.losses import DeblurLoss
from deblur_unet.model import DeblurUNet, count_parameters
from shared.amp import MixedPrecision, NonFiniteError
from shared.checkpoint import CheckpointManager, save_checkpoint
from shared.device import resolve_device
from shared.distributed import DistInfo, all_reduce_mean, cleanup_distributed, init_distributed, wrap_ddp
from shared.errors import DataError, unwrap_worker_error
from shared.images import describe_conversions, read_image, read_image_size, save_image_grid
from shared.metrics import psnr, ssim
from shared.sampler import EpochSampler
from shared.seed import seed_everything, seed_worker
from shared.tracking import default_mlflow_uri
from shared.training import Budget, RunningMeans, TrainingRun

KIND = "deblur_unet"
SAMPLE_ROWS = 4
MODEL_NAME = "deblur_model"


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
    train = DeblurDataset.from_pairs(train_pairs, patch_size=cfg.patch_size, is_training=True, seed=cfg.seed,
                                     crops_per_image=cfg.crops_per_image, cache=cfg.cache_images,
                                     synthetic_blur=cfg.synthetic_blur)
    val = DeblurDataset.from_pairs(val_pairs, patch_size=cfg.val_patch_size, is_training=False, seed=cfg.seed)
    return train, val


def conversion_notes(datasets: Sequence[Dataset]) -> list[str]:
    """One line per kind of data-changing conversion of the datasets' files (16-bit files are kept)."""
    files = [path for dataset in datasets for pair in getattr(dataset, "pairs", ()) for path in pair]
    return describe_conversions(list(dict.fromkeys(files)), keep_16bit=True)


def lr_factor(elapsed_minutes: float, max_minutes: float | None, decay_fraction: float) -> float:
    """The learning rate's multiplier: 1, then a half cosine to 0 over the last ``decay_fraction`` of
    ``max_minutes``.

    By wall time because a time budget fixes no step count to schedule over; the low-rate end averages
    out the noise of the high constant rate that a short run needs to get anywhere.
    """
    if not decay_fraction or max_minutes is None:
        return 1.0
    start = (1.0 - decay_fraction) * max_minutes
    if elapsed_minutes <= start:
        return 1.0
    progress = min(1.0, (elapsed_minutes - start) / (decay_fraction * max_minutes))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_model(cfg: TrainConfig) -> DeblurUNet:
    model = DeblurUNet(base_ch=cfg.base_ch, residual=cfg.residual)
    if cfg.zero_init:
        # With the global residual this starts at the identity, i.e. at the blurry input's PSNR, instead
        # of the input plus a random head's noise that a short run spends its steps removing.
        torch.nn.init.zeros_(model.final.weight)
        torch.nn.init.zeros_(model.final.bias)
    return model


def _loader(dataset: Dataset, sampler: EpochSampler, batch_size: int, cfg: TrainConfig, device) -> DataLoader:
    # Workers are re-created every epoch (not persistent) so they see the dataset's new epoch.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      worker_init_fn=seed_worker, pin_memory=device.type == "cuda", drop_last=False)


# ------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, criterion, amp: MixedPrecision, device) -> dict[str, float]:
    """Mean ``val_loss``, ``psnr`` and ``ssim`` over the loader (averaged over ranks under DDP), and
    ``input_psnr``/``input_ssim``: the blurry input's own, the baseline a deblurring model must beat."""
    model.eval()
    totals = {"val_loss": 0.0, "psnr": 0.0, "ssim": 0.0, "input_psnr": 0.0, "input_ssim": 0.0}
    count = 0
    for blur, sharp in loader:
        blur, sharp = blur.to(device), sharp.to(device)
        with amp.autocast():
            output = model(blur)
        output = output.float()
        totals["val_loss"] += float(criterion(output, sharp)) * blur.shape[0]
        out01, sharp01, blur01 = to_unit_range(output), to_unit_range(sharp), to_unit_range(blur)
        totals["psnr"] += float(psnr(out01, sharp01).sum())
        totals["ssim"] += float(ssim(out01, sharp01).sum())
        totals["input_psnr"] += float(psnr(blur01, sharp01).sum())
        totals["input_ssim"] += float(ssim(blur01, sharp01).sum())
        count += blur.shape[0]
    model.train()
    total_count = all_reduce_mean(float(count))
    return {k: all_reduce_mean(v) / max(total_count, 1e-12) for k, v in totals.items()}


def log_validation(run: TrainingRun, metrics: dict[str, float], global_step: int) -> str:
    """``val/psnr`` beside ``val/psnr_input`` (and SSIM) in the tracker; returns the console line."""
    model = {"psnr": metrics["psnr"], "ssim": metrics["ssim"]}
    baselines = {"input": {"psnr": metrics["input_psnr"], "ssim": metrics["input_ssim"]}}
    return run.log_validation(model, baselines, global_step)


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
    return save_image_grid(path, rows, labels=("blurry input", "output", "sharp target"))


def validate_at_stop(run: TrainingRun, manager: CheckpointManager, stopped: dict[str, Any], model, loader,
                     criterion, amp: MixedPrecision, device, global_step: int, is_main: bool) -> None:
    """Validate a run stopped by its budget; write ``best.pth`` (the stopped state) if it improved."""
    metrics = validate(model, loader, criterion, amp, device)
    improved = manager.is_better(metrics["val_loss"])
    run.tracker.log_metrics(metrics, step=global_step)
    line = log_validation(run, metrics, global_step)
    if improved:
        manager.best_metric = float(metrics["val_loss"])
        if is_main:
            save_checkpoint(manager.best_path, manager.stamp(stopped))
    if is_main:
        tqdm.write(f"at the stop: val_loss {metrics['val_loss']:.4f}{'  *best*' if improved else ''}; {line}",
                   file=sys.stderr)


# ---------------------------------------------------------------------------------------- MLflow
def mlflow_store(cfg: TrainConfig) -> dict[str, Any]:
    """Where MLflow writes: the runs in ``mlflow.db`` beside ``--mlruns-dir``, models and images inside it.

    A database because MLflow 3 serves (``mlflow ui``) and loads models from a plain ``mlruns/`` file
    store only with ``MLFLOW_ALLOW_FILE_STORE`` set. ``$MLFLOW_TRACKING_URI`` wins, with its own artifacts.
    """
    if cfg.tracker != "mlflow" or os.environ.get("MLFLOW_TRACKING_URI"):
        return {}
    artifacts = Path(cfg.mlruns_dir).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return {"tracking_uri": default_mlflow_uri(artifacts.parent), "artifact_location": artifacts}


def log_mlflow_model(model: DeblurUNet, step: int) -> None:
    """Log ``model``'s weights as ``deblur_model`` (pickle format: any input size), with a signature."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    copy = DeblurUNet(**model.config()).eval()  # on the CPU, whatever trains
    copy.load_state_dict(model.state_dict())
    # Not inferred from the example, which would pin every image to its 64×64.
    images = Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))])
    example = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    mlflow.pytorch.log_model(
        copy, name=MODEL_NAME, signature=ModelSignature(images, images), input_example=example, step=step,
        serialization_format="pickle", pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "deblur_unet"],
    )


# ------------------------------------------------------------------------------------------- main
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train per ``cfg``; returns a summary.

    Exits with ``EXIT_PREEMPTED`` after a SIGTERM/SIGINT save, and with 0 after a ``--max-minutes`` /
    ``--max-steps`` save; raises :class:`NonFiniteError` (exit status 3 through ``cli_entry``) when
    training diverges, after saving the last good state.
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
    run = TrainingRun(KIND, manager, resume=cfg.resume, overwrite=cfg.overwrite,
                      budget=Budget(cfg.max_minutes, cfg.max_steps))
    train_set, val_set = build_datasets(cfg)
    if info.is_main:
        # Said once, before any step, so that a grayscale or RGBA file among thousands is not a surprise.
        for line in conversion_notes([train_set, val_set]):
            print(f"note: {line}", file=sys.stderr)

    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = MixedPrecision(cfg.precision, device, modules=[model])
    criterion = DeblurLoss(cfg.charbonnier_eps, cfg.fft_weight)
    objects = {"model": model, "optimizer": optimizer, "amp": amp}

    start_epoch, global_step, no_improve, resume_step = 0, 0, 0, 0
    means = RunningMeans()
    if run.resuming:
        resumed = run.restore(objects)
        start_epoch, global_step = resumed.epoch, resumed.global_step
        no_improve = int(resumed.extra.get("epochs_no_improve", 0))
        resume_step = int(resumed.extra.get("epoch_step", 0))
        means.load_state_dict(resumed.extra.get("running", {}))
        if info.is_main:
            where = f" (step {resume_step} of epoch {start_epoch + 1})" if resume_step else ""
            print(f"resumed from {run.resume_path}: {start_epoch} epochs done{where}", file=sys.stderr)

    def state(epoch: int, **extra) -> dict[str, Any]:
        return run.state(epoch=epoch, global_step=global_step, objects=objects, config=asdict(cfg),
                         extra={"epochs_no_improve": no_improve, "model_config": model.config(), **extra})

    ddp_model = wrap_ddp(model, device)
    train_sampler = EpochSampler(len(train_set), shuffle=True, seed=cfg.seed)
    val_sampler = EpochSampler(len(val_set), shuffle=False)
    train_loader = _loader(train_set, train_sampler, cfg.batch_size, cfg, device)
    val_batch = cfg.batch_size if (cfg.synthetic or cfg.val_patch_size) else 1
    val_loader = _loader(val_set, val_sampler, val_batch, cfg, device)

    # The spec's parameter names too, so runs compare with the original project's.
    params = {**asdict(cfg), "learning_rate": cfg.lr, "num_epochs": cfg.epochs}
    tracker = run.open_tracker(cfg.tracker, cfg.output_dir, project=cfg.experiment, run_name=cfg.run_name,
                               config=params, **mlflow_store(cfg))
    if info.is_main:
        print(f"DeblurUNet(base_ch={cfg.base_ch}): {count_parameters(model) / 1e6:.2f}M parameters on {device}; "
              f"{len(train_set)} train / {len(val_set)} val samples", file=sys.stderr)
    summary: dict[str, Any] = {"early_stopped": False, "epochs_done": start_epoch}
    metrics: dict[str, float] = {}
    with run:
        for epoch in range(start_epoch, cfg.epochs):
            steps = resume_step if epoch == start_epoch else 0
            train_set.set_epoch(epoch)
            train_sampler.set_epoch(epoch, start=steps * cfg.batch_size)
            batches = train_sampler.batches_per_epoch(cfg.batch_size)
            limit = min(cfg.max_steps_per_epoch or batches, batches)
            bar = tqdm(total=limit, initial=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not info.is_main, dynamic_ncols=True, file=sys.stderr)
            try:
                for blur, sharp in islice(train_loader, max(0, limit - steps)):
                    blur = blur.to(device, non_blocking=True)
                    sharp = sharp.to(device, non_blocking=True)
                    if cfg.lr_decay_fraction:
                        factor = lr_factor(run.elapsed_minutes(), cfg.max_minutes, cfg.lr_decay_fraction)
                        for group in optimizer.param_groups:
                            group["lr"] = cfg.lr * factor
                    with amp.autocast():
                        loss = criterion(ddp_model(blur), sharp)
                    result = amp.backward_and_step(loss, optimizer, max_grad_norm=cfg.grad_clip or None)
                    steps += 1
                    if result.stepped:
                        global_step += 1
                        means.add({"train_loss": float(loss.detach())})
                    bar.update(1)
                    bar.set_postfix(loss=f"{means.local().get('train_loss', float('nan')):.4f}")
                    if run.should_stop(global_step):
                        # Taken before validating, so that the saved RNG streams are an uninterrupted run's.
                        stopped = state(epoch, epoch_step=steps, running=means.state_dict())
                        if run.stop_reason != "signal":
                            # A budget may end a run before its first epoch does (or long after the last
                            # validation): validate here so that best.pth is chosen on validation.
                            validate_at_stop(run, manager, stopped, ddp_model, val_loader, criterion, amp,
                                             device, global_step, info.is_main)
                        run.stop_and_exit(stopped, f"at step {steps} of epoch {epoch + 1}")
            except DataError as exc:
                raise unwrap_worker_error(exc) from None
            except NonFiniteError as exc:
                # Resumable at this batch, like a stopped run; the skipped steps changed no weights.
                raise run.diverged(exc, state(epoch, epoch_step=steps, running=means.state_dict())) from None
            finally:
                bar.close()

            # train_loss is absent from an epoch none of whose steps went through.
            metrics = {**means.reduced(), **validate(ddp_model, val_loader, criterion, amp, device)}
            means = RunningMeans()
            improved = manager.is_better(metrics["val_loss"])
            no_improve = 0 if improved else no_improve + 1
            tracker.log_metrics({**metrics, "epoch": epoch + 1}, step=global_step)
            line = log_validation(run, metrics, global_step)
            if info.is_main:
                tqdm.write(f"epoch {epoch + 1}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                           + ("  *best*" if improved else ""), file=sys.stderr)
                tqdm.write(line, file=sys.stderr)
                if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0:
                    grid = save_samples(model, val_set, Path(cfg.output_dir) / "samples" / f"epoch_{epoch + 1:04d}.png",
                                        amp, device)
                    tracker.log_image("samples", read_image(grid), step=global_step)
            run.end_epoch(state(epoch + 1, metrics=metrics), epoch + 1, metrics["val_loss"])
            # At every new best, so that a run stopped at any point has its best model in MLflow.
            if improved and cfg.log_model and tracker.backend == "mlflow":
                log_mlflow_model(model, global_step)
            summary["epochs_done"] = epoch + 1
            if cfg.patience and no_improve >= cfg.patience:
                if info.is_main:
                    print(f"early stopping: val_loss has not improved for {no_improve} epochs", file=sys.stderr)
                summary["early_stopped"] = True
                break
    summary.update(best_val_loss=manager.best_metric, last_metrics=metrics, global_step=global_step)
    return summary
