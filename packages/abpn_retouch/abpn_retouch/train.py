"""Patch-wise ABPN training: DDP under torchrun, AMP, W&B by default, exact resume, graceful stop.

Validation runs on whole held-out pairs (``--val-fraction`` of the pairs, or ``--val-image-dir``) at
each epoch end, every ``--val-every`` steps and at a ``--max-minutes`` stop; it logs ``val/psnr`` and
``val/ssim`` beside ``val/psnr_original`` and ``val/ssim_original`` (the untouched input, which a
retouching model must beat), and ``best.pth`` is the best validation PSNR (the training loss only
when there is nothing to validate on).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from abpn_retouch.config import TrainConfig, parse_config
from abpn_retouch.data import (
    FilePair,
    ImageSource,
    PatchDataset,
    SyntheticPair,
    file_sources,
    mean_mask_coverage,
    patch_loader,
    split_validation,
    synthetic_sources,
    to_model,
    unpaired_note,
)
from abpn_retouch.losses import LossWeights, RetouchLoss
from abpn_retouch.masks import MaskRecipe
from abpn_retouch.model import ABPN, ABPNConfig
from shared.amp import MixedPrecision, NonFiniteError
from shared.checkpoint import CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint
from shared.device import resolve_device
from shared.distributed import cleanup_distributed, init_distributed, wrap_ddp
from shared.errors import ConfigError, UserError, cli_entry, unwrap_worker_error
from shared.images import describe_conversions, read_image, save_image_grid
from shared.seed import make_generator, seed_everything, seed_worker
from shared.training import Budget, RunningMeans, TrainingRun

KIND = "abpn_retouch"
# Above this mean GT-mask coverage the masked losses are global ones and Dice is trivial.
COVERAGE_WARNING = 0.8


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


def mask_recipe(cfg: TrainConfig) -> MaskRecipe:
    return MaskRecipe(magnifier=cfg.magnifier, mask_threshold=cfg.mask_threshold, reference=cfg.mask_reference)


def split_sources(cfg: TrainConfig, unpaired: list[Path] | None = None
                  ) -> tuple[list[ImageSource], list[ImageSource]]:
    """``(train, validation)`` pairs: a validation folder, else held-out pairs (synthetic: extra pairs).

    Files left out for want of a partner (unless ``--strict-pairs``) are appended to ``unpaired``.
    """
    if cfg.synthetic:
        side = cfg.synthetic_size or cfg.patch_size + cfg.stride
        train = synthetic_sources(cfg.synthetic_count, (side, side), cfg.seed)
        # Procedural pairs are free: validate on new ones and keep the training set as asked.
        held = [SyntheticPair(cfg.synthetic_count, cfg.seed, (side, side))] if cfg.val_fraction > 0 else []
        return train, held
    if bool(cfg.val_image_dir) != bool(cfg.val_gt_dir):
        raise ConfigError("--val-image-dir and --val-gt-dir go together")
    sources = file_sources(cfg.image_dir, cfg.gt_dir, cfg.strict_pairs, unpaired)
    if cfg.val_image_dir:
        return sources, file_sources(cfg.val_image_dir, cfg.val_gt_dir, cfg.strict_pairs, unpaired)
    return split_validation(sources, cfg.val_fraction, cfg.seed)


def build_dataset(cfg: TrainConfig, sources: list[ImageSource] | None = None) -> PatchDataset:
    if sources is None:
        sources = split_sources(cfg)[0]
    return PatchDataset(sources, cfg.patch_size, cfg.stride, mask_recipe(cfg), cfg.cache_images, cfg.pad_small,
                        flip=not cfg.no_flip, seed=cfg.seed, balance=cfg.balance_images)


def report_data(sources: list[ImageSource], unpaired: list[Path]) -> None:
    """Say once what the run leaves out (unpaired files) and how reading changes its files' data."""
    if unpaired:
        print(unpaired_note(unpaired, len(sources)), file=sys.stderr)
    files = [path for source in sources if isinstance(source, FilePair) for path in (source.image_path, source.gt_path)]
    # 16-bit files are read at full precision (FilePair), so only the other conversions change data.
    for line in describe_conversions(files, keep_16bit=True):
        print(f"note: {line}", file=sys.stderr)


def report_coverage(sources: list[ImageSource], recipe: MaskRecipe) -> float:
    """Print the mean GT-mask coverage of the training pairs; warn when it is too high to mean anything."""
    mean, measured = mean_mask_coverage(sources, recipe)
    print(f"GT mask coverage: {100 * mean:.1f}% on average over {measured} training pair(s) "
          f"(reference {recipe.reference}, magnifier {recipe.magnifier:g}, threshold {recipe.mask_threshold:g})",
          file=sys.stderr)
    if mean > COVERAGE_WARNING:
        print(f"warning: the GT masks cover {100 * mean:.0f}% of the images (over {100 * COVERAGE_WARNING:.0f}%): "
              "the masked losses act globally and mask IoU/Dice mean little; raise --mask-threshold or use "
              "--mask-reference tone_curve", file=sys.stderr)
    return mean


@torch.no_grad()
def validation_scores(model: ABPN, sources: list[ImageSource], recipe: MaskRecipe, tile_size: int,
                      device: torch.device) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over the validation pairs: ``(model's, {"original": untouched input's})``."""
    from abpn_retouch.evaluate import score_pair

    was_training = model.training
    model.eval()
    rows = []
    for source in sources:
        image, target = source.load()
        overlap = min(tile_size // 4, 256) // 2 * 2
        rows.append(score_pair(model, image, target, recipe, tile_size, overlap, device)[0])
    model.train(was_training)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    return ({"psnr": mean["psnr"], "ssim": mean["ssim"], "mask_iou": mean["mask_iou"],
             "mask_coverage": mean["mask_coverage"]},
            {"original": {"psnr": mean["psnr_input"], "ssim": mean["ssim_input"]}})


def validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.num_epochs >= 1, "--num-epochs must be >= 1"),
        (cfg.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.learning_rate > 0, "--learning-rate must be positive"),
        (cfg.pyramid_levels >= 1, "--pyramid-levels must be >= 1"),
        (cfg.sample_save_freq >= 0, "--sample-save-freq must be >= 0"),
        (cfg.num_workers >= 0, "--num-workers must be >= 0"),
        (cfg.synthetic_count >= 1, "--synthetic-count must be >= 1"),
        (0 <= cfg.val_fraction < 1, "--val-fraction must be in [0, 1)"),
        (cfg.val_every >= 0, "--val-every must be >= 0"),
        (cfg.val_tile_size % (2 ** (cfg.pyramid_levels + 2)) == 0,
         f"--val-tile-size {cfg.val_tile_size} must be a multiple of {2 ** (cfg.pyramid_levels + 2)}"),
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


SAMPLE_COLUMNS = ("input", "output", "target", "mask (predicted)", "mask (GT)")


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
    return save_image_grid(path, rows, labels=SAMPLE_COLUMNS)


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
    unpaired: list[Path] = []
    train_sources, val_sources = split_sources(cfg, unpaired)
    validating = bool(val_sources)
    manager = CheckpointManager(cfg.save_dir, save_every_n_epochs=cfg.save_every, keep_last=cfg.keep_last,
                                monitor="val_psnr" if validating else "train_loss", mode="max" if validating else "min")
    run = TrainingRun(KIND, manager, resume=cfg.resume or None, overwrite=cfg.overwrite,
                      budget=Budget(cfg.max_minutes, cfg.max_steps), folder_flag="--save-dir")

    dataset = build_dataset(cfg, train_sources)
    recipe = mask_recipe(cfg)
    if is_main:
        report_data(train_sources + val_sources, unpaired)
        report_coverage(train_sources, recipe)
        names = ", ".join(s.name for s in val_sources[:5]) + (" ..." if len(val_sources) > 5 else "")
        print(f"training on {len(train_sources)} pair(s) ({len(dataset)} patches); "
              + (f"validating on {len(val_sources)}: {names}" if validating
                 else "no validation pairs: best.pth follows the training loss"), file=sys.stderr)
    # Grouping an image's patches only saves decodes; when every pair stays in the cache, batches mix
    # images, since one-photo batches pull the weights towards each photo's global edit in turn.
    mixed = cfg.cache_images >= len(train_sources)
    loader = patch_loader(dataset, cfg.batch_size, cfg.num_workers, seed=cfg.seed, rank=dist_info.rank, mixed=mixed,
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
    last_validation: dict[str, float] = {}  # {"step": ..., "psnr": ...} of the latest validation

    def validate_now() -> float:
        if last_validation.get("step") == global_step:
            return last_validation["psnr"]
        model_metrics, baselines = validation_scores(model, val_sources, recipe, cfg.val_tile_size, device)
        line = run.log_validation(model_metrics, baselines, global_step)
        if is_main:
            tqdm.write(f"step {global_step}: {line}", file=sys.stderr)  # not glued to the progress bar
        last_validation.update(step=global_step, psnr=model_metrics["psnr"])
        return model_metrics["psnr"]

    def keep_if_best(metric: float, epoch_done: int, batch_in_epoch: int) -> None:
        """Between epoch ends: write best.pth now if ``metric`` beats it (epoch ends go through the manager)."""
        if manager.is_better(metric):
            manager.best_metric = metric
            if is_main:
                save_checkpoint(manager.best_path, training_state(epoch_done, batch_in_epoch))

    with run:
        for epoch in range(start_epoch, cfg.num_epochs):
            loader.batch_sampler.set_epoch(epoch, skip=skip_batches, layout_workers=layout_workers)
            dataset.set_epoch(epoch)
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
                    if validating and result.stepped and cfg.val_every and global_step % cfg.val_every == 0:
                        keep_if_best(validate_now(), epoch, batch_in_epoch)
                    if run.should_stop(global_step):
                        # A time budget ends a benchmark run: its final weights are a candidate for best.
                        # (Not a step budget or a signal: those slice a run to be resumed exactly.)
                        if validating and (run.stop_reason or "").startswith("time budget"):
                            keep_if_best(validate_now(), epoch, batch_in_epoch)
                        return run.stop(training_state(epoch, batch_in_epoch),
                                        f"at epoch {epoch + 1}, batch {batch_in_epoch}")
            except UserError as exc:
                raise unwrap_worker_error(exc) from None
            # An epoch whose every step was skipped has no loss: inf, never a "best" 0.
            epoch_loss = means.reduced().get("loss", float("inf"))
            means = RunningMeans()
            run.end_epoch(training_state(epoch + 1, 0), epoch + 1, validate_now() if validating else epoch_loss)
            tracker.log_metrics({"epoch/train_loss": epoch_loss, "epoch": epoch + 1}, step=global_step)
            if is_main and cfg.sample_save_freq and (epoch + 1) % cfg.sample_save_freq == 0:
                grid = save_samples(model, dataset, samples, device,
                                    Path(cfg.save_dir) / "samples" / f"epoch_{epoch + 1:04d}.png")
                tracker.log_image("samples", read_image(grid), step=global_step)
            if is_main:
                best = "none yet" if manager.best_metric is None else f"{manager.best_metric:.5f}"
                print(f"epoch {epoch + 1}: train_loss {epoch_loss:.5f} (best {manager.monitor} {best})",
                      file=sys.stderr)
    return 0


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    """Console script ``abpn-train`` (same flags as ``trainer.py``)."""
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    status = train(parse_config(argv))
    if status:
        raise SystemExit(status)
