"""Patch-wise ABPN training: DDP under torchrun, AMP, W&B by default, exact resume, graceful stop."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from abpn_retouch.config import TrainConfig, parse_config
from abpn_retouch.data import PatchDataset, file_sources, patch_loader, synthetic_sources, to_model
from abpn_retouch.losses import LossWeights, RetouchLoss
from abpn_retouch.masks import MaskRecipe
from abpn_retouch.model import ABPN, ABPNConfig
from shared.amp import MixedPrecision, NonFiniteError
from shared.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from shared.device import resolve_device
from shared.distributed import cleanup_distributed, init_distributed, wrap_ddp
from shared.errors import ConfigError, UserError, cli_entry, unwrap_worker_error
from shared.images import read_image, save_image_grid
from shared.seed import make_generator, seed_everything, seed_worker
from shared.training import Budget, RunningMeans, TrainingRun

KIND = "abpn_retouch"


def model_config(cfg: TrainConfig) -> ABPNConfig:
    return ABPNConfig(pyramid_levels=cfg.pyramid_levels, base_channels=cfg.base_channels,
                      refine_channels=cfg.refine_channels)


def build_model_from_checkpoint(state: dict) -> ABPN:
    """An ABPN with the architecture recorded in a checkpoint, weights loaded."""
    config = ABPNConfig(**state.get("extra", {}).get("model_config", {}))
    model = ABPN(config)
    weights = state.get("state", {}).get("model", state)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit ABPN: {str(exc).splitlines()[0][:200]}") from None
    return model


def load_pretrained(model: ABPN, path: str) -> None:
    """``--pretrained-path``: weights only, from a training checkpoint or a bare state dict."""
    state = load_checkpoint(path)
    weights = state.get("state", {}).get("model", state)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit this ABPN "
                              f"(check --pyramid-levels/--base-channels): {str(exc).splitlines()[0][:200]}") from None


def _resolve_precision(precision: str, device: torch.device) -> str:
    # The spec trains with AMP on by default; on CPU fp16 autocast is slow and bf16 is imprecise, so fp32.
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def build_dataset(cfg: TrainConfig) -> PatchDataset:
    recipe = MaskRecipe(magnifier=cfg.magnifier, mask_threshold=cfg.mask_threshold)
    if cfg.synthetic:
        side = cfg.synthetic_size or cfg.patch_size + cfg.stride
        sources = synthetic_sources(cfg.synthetic_count, (side, side), cfg.seed)
    else:
        sources = file_sources(cfg.image_dir, cfg.gt_dir)
    return PatchDataset(sources, cfg.patch_size, cfg.stride, recipe, cfg.cache_images, cfg.pad_small)


def validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.num_epochs >= 1, "--num-epochs must be >= 1"),
        (cfg.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.learning_rate > 0, "--learning-rate must be positive"),
        (cfg.pyramid_levels >= 1, "--pyramid-levels must be >= 1"),
        (cfg.sample_save_freq >= 0, "--sample-save-freq must be >= 0"),
        (cfg.num_workers >= 0, "--num-workers must be >= 0"),
        (cfg.synthetic_count >= 1, "--synthetic-count must be >= 1"),
        (cfg.patch_size % (2 ** (cfg.pyramid_levels + 2)) == 0,
         f"--patch-size {cfg.patch_size} must be a multiple of {2 ** (cfg.pyramid_levels + 2)} "
         f"(2**(pyramid_levels + 2))"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def sample_indices(dataset: PatchDataset, count: int = 4) -> list[int]:
    """The first patch of the first few images: a fixed set to watch across epochs."""
    firsts = [group[len(group) // 2] for group in dataset.groups if group][:count]
    return firsts or [0]


@torch.no_grad()
def save_samples(model: ABPN, dataset: PatchDataset, indices: list[int], device: torch.device,
                 path: Path) -> Path:
    """Grid rows: input | output | target | predicted mask | GT mask (masks upsampled to the patch)."""
    model.eval()
    rows = []
    for index in indices:
        inputs, targets, masks = to_model(dataset[index])
        output, logits = model(inputs[None].to(device))
        size = inputs.shape[-2:]
        pred_mask = F.interpolate(torch.sigmoid(logits.float()), size=size, mode="bilinear", align_corners=False)
        gt_mask = F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)
        rows.append([inputs, output[0].cpu(), targets, pred_mask[0].cpu(), gt_mask[0]])
    model.train()
    return save_image_grid(path, rows)


def train(cfg: TrainConfig) -> int:
    """Run training; returns the process exit status (0, or EXIT_PREEMPTED after a signal).

    Raises :class:`NonFiniteError` (exit status 3 through ``cli_entry``) when training diverges, after
    saving the last good state.
    """
    validate(cfg)
    dist_info = init_distributed(timeout_minutes=30.0, device=cfg.device)
    try:
        return _train(cfg, dist_info)
    finally:
        cleanup_distributed()


def _train(cfg: TrainConfig, dist_info) -> int:
    device = resolve_device(cfg.device)
    is_main = dist_info.is_main
    seed_everything(cfg.seed, cfg.deterministic)
    if device.type == "cuda" and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True  # fixed patch size: autotuning pays off
    manager = CheckpointManager(cfg.save_dir, save_every_n_epochs=cfg.save_every, keep_last=cfg.keep_last,
                                monitor="train_loss", mode="min")
    run = TrainingRun(KIND, manager, resume=cfg.resume or None, overwrite=cfg.overwrite,
                      budget=Budget(cfg.max_minutes, cfg.max_steps), folder_flag="--save-dir")

    dataset = build_dataset(cfg)
    loader = patch_loader(dataset, cfg.batch_size, cfg.num_workers, seed=cfg.seed, rank=dist_info.rank,
                          world_size=dist_info.world_size, pin_memory=device.type == "cuda",
                          worker_init_fn=seed_worker, generator=make_generator(cfg.seed))
    model = ABPN(model_config(cfg)).to(device)
    if cfg.pretrained_path:
        load_pretrained(model, cfg.pretrained_path)
    weights = LossWeights(cfg.w_masked_l1, cfg.w_global_l1, cfg.w_edge, cfg.w_high_freq, cfg.w_perceptual,
                          cfg.w_dice)
    criterion = RetouchLoss(weights, cfg.vgg_weights or None, cfg.perceptual_size, quiet=not is_main).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    amp = MixedPrecision(_resolve_precision(cfg.precision, device), device, modules=[model])
    objects = {"model": model, "optimizer": optimizer, "amp": amp}

    start_epoch, global_step, skip_batches, layout_workers = 0, 0, 0, None
    means = RunningMeans()
    if run.resuming:
        info = run.restore(objects)
        start_epoch, global_step = info.epoch, info.global_step
        skip_batches = int(info.extra.get("batch_in_epoch", 0))
        # Batches are laid out per worker: the saved batch position only means the same patches under
        # the interrupted run's worker count.
        if skip_batches:
            layout_workers = int(info.config.get("num_workers", cfg.num_workers))
            means.load_state_dict(info.extra.get("running", {}))
        if is_main:
            print(f"resumed from {run.resume_path}: epoch {start_epoch}, step {global_step}"
                  + (f", batch {skip_batches} of the epoch" if skip_batches else ""), file=sys.stderr)

    ddp_model = wrap_ddp(model, device, find_unused_parameters=cfg.find_unused_parameters)
    samples = sample_indices(dataset)
    config_dict = asdict(cfg)

    def training_state(epoch_done: int, batch_in_epoch: int) -> dict:
        return run.state(epoch=epoch_done, global_step=global_step, objects=objects, config=config_dict,
                         extra={"batch_in_epoch": batch_in_epoch, "running": means.state_dict(),
                                "model_config": asdict(model.config)})

    tracker = run.open_tracker(cfg.tracker, cfg.save_dir, project=cfg.project, run_name=cfg.run_name or None,
                               config=config_dict)
    with run:
        for epoch in range(start_epoch, cfg.num_epochs):
            loader.batch_sampler.set_epoch(epoch, skip=skip_batches, layout_workers=layout_workers)
            batch_in_epoch = skip_batches
            skip_batches, layout_workers = 0, None
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.num_epochs}", disable=not is_main,
                       dynamic_ncols=True, file=sys.stderr)
            try:
                for batch in bar:
                    inputs, targets, masks = to_model(batch, device)
                    with amp.autocast():
                        output, mask_logits = ddp_model(inputs)
                        loss, terms = criterion(output, targets, mask_logits, masks)
                    try:
                        result = amp.backward_and_step(loss, optimizer, max_grad_norm=cfg.max_grad_norm or None)
                    except NonFiniteError as exc:
                        bar.close()
                        # Resumable at this batch; the skipped steps before it changed no weights.
                        raise run.diverged(exc, training_state(epoch, batch_in_epoch)) from None
                    batch_in_epoch += 1
                    if result.stepped:
                        global_step += 1
                        means.add({"loss": float(loss.detach())})
                        bar.set_postfix(loss=f"{means.local()['loss']:.4f}", l1=f"{terms['global_l1'].item():.4f}",
                                        dice=f"{terms['dice'].item():.3f}")
                        if global_step % cfg.log_every == 0:
                            tracker.log_metrics({"train/loss": float(loss.detach()),
                                                 **{f"train/{k}": v.item() for k, v in terms.items()}},
                                                step=global_step)
                    if run.should_stop(global_step):
                        return run.stop(training_state(epoch, batch_in_epoch),
                                        f"at epoch {epoch + 1}, batch {batch_in_epoch}")
            except UserError as exc:
                raise unwrap_worker_error(exc) from None
            # An epoch whose every step was skipped has no loss: inf, never a "best" 0.
            epoch_loss = means.reduced().get("loss", float("inf"))
            means = RunningMeans()
            run.end_epoch(training_state(epoch + 1, 0), epoch + 1, epoch_loss)
            tracker.log_metrics({"epoch/train_loss": epoch_loss, "epoch": epoch + 1}, step=global_step)
            if is_main and cfg.sample_save_freq and (epoch + 1) % cfg.sample_save_freq == 0:
                grid = save_samples(model, dataset, samples, device,
                                    Path(cfg.save_dir) / "samples" / f"epoch_{epoch + 1:04d}.png")
                tracker.log_image("samples", read_image(grid), step=global_step)
            if is_main:
                best = "none yet" if manager.best_metric is None else f"{manager.best_metric:.5f}"
                print(f"epoch {epoch + 1}: train_loss {epoch_loss:.5f} (best {best})", file=sys.stderr)
    return 0


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    """Console script ``abpn-train`` (same flags as ``trainer.py``)."""
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    status = train(parse_config(argv))
    if status:
        raise SystemExit(status)
