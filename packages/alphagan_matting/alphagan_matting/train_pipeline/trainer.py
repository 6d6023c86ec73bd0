"""The epoch loop: data, models, optimizers, the D/G step, what it logs; the run's life is shared.training's."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from alphagan_matting.dataset import (
    MattingDataset,
    SyntheticMattingDataset,
    check_trimaps_of,
    collate,
    dataset_conversion_notes,
    find_backgrounds,
    load_labels,
)
from alphagan_matting.losses import compute_metrics
from alphagan_matting.schemas import Config, MattingBatch, Metrics
from alphagan_matting.train_pipeline.steps import TrainParts, test_step, train_step
from alphagan_matting.transforms.trans_pipeline import build_transforms
from alphagan_matting.utils import (
    build_discriminator,
    build_generator,
    config_precision,
    load_pretrained_encoder,
    unit_to_trimap,
)
from shared.amp import MixedPrecision, NonFiniteError, autocast
from shared.checkpoint import CheckpointManager, save_checkpoint
from shared.device import resolve_device
from shared.distributed import (
    cleanup_distributed,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    wrap_ddp,
)
from shared.errors import ConfigError
from shared.images import make_grid, save_image_grid
from shared.sampler import EpochSampler
from shared.seed import seed_everything, seed_worker
from shared.training import Budget, RunningMeans, TrainingRun

KIND = "alphagan_matting"
# What a user changes to start a second run elsewhere (named when a folder already holds one).
FOLDER_FLAG = "--checkpoints-dir (or general.checkpoints_dir)"
# The trivial baseline every validation reports beside the model: the trimap itself, unknown = 0.5.
TRIMAP_BASELINE = "trimap"


@dataclass
class RunOptions:
    """Command-line settings that are not in the YAML config."""

    csv: Path | None = None
    synthetic: bool = False
    synthetic_size: int = 8
    device: str = "auto"
    precision: str | None = None  # None: the config's amp section
    deterministic: bool = False
    resume: str | None = None  # a checkpoint path, or "auto"
    overwrite: bool = False
    tracker: str = "tensorboard"
    num_workers: int = 0
    pretrained: Path | None = None
    max_grad_norm: float = 0.0
    repeat: int = 1  # training samples per foreground per epoch
    bg: Path | None = None  # background pool for training composites; None: the CSV's backgrounds
    max_minutes: float | None = None
    max_steps: int | None = None  # in total, resumed steps included


def make_manager(cfg: Config) -> CheckpointManager:
    """Best and last checkpoints named by ``general.colab.best_chkp_name``/``last_chkp_name`` in every mode."""
    g = cfg.general
    names = {"best_name": f"{g.colab.best_chkp_name}.pth", "latest_name": f"{g.colab.last_chkp_name}.pth"}
    # Colab: tight Drive quotas, so only those two files, overwritten; otherwise periodic ones too, all kept.
    every = 0 if g.colab.use_colab else cfg.train.save_chkp_n_epoches
    return CheckpointManager(g.checkpoints_dir, save_every_n_epochs=every, keep_last=0, monitor="test/SAD",
                             mode="min", **names)


def build_datasets(cfg: Config, opts: RunOptions) -> tuple[Dataset, Dataset | None]:
    seed = cfg.general.random_seed
    train_tf, test_tf = build_transforms(cfg.train.crop_size, cfg.test.resize_size, cfg.general.mean, cfg.general.std)
    if opts.synthetic:
        size = max(cfg.train.crop_size, cfg.test.resize_size) * 5 // 4
        n_test = max(1, opts.synthetic_size // 4)
        return (SyntheticMattingDataset(opts.synthetic_size, size, train_tf, True, seed, repeat=opts.repeat),
                SyntheticMattingDataset(n_test, size, test_tf, False, seed))
    if opts.csv is None:
        raise ConfigError("no data: pass --csv dataset/dataset_labels.csv or --synthetic")
    rows = load_labels(opts.csv)
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]
    if not train_rows:
        raise ConfigError(f"{opts.csv}: no rows with split 'train'")
    # Test trimaps are the dataset's own (training ones are made from the alpha): check them all now,
    # before the models are built, and say once how many had to be quantised.
    check_trimaps_of([(Path(r["trimap"]), Path(r["mask"])) for r in test_rows], say=is_main_process())
    test = MattingDataset(test_rows, test_tf, False, seed) if test_rows else None
    backgrounds = find_backgrounds(opts.bg) if opts.bg is not None else None
    train = MattingDataset(train_rows, train_tf, True, seed, repeat=opts.repeat, backgrounds=backgrounds)
    if is_main_process():
        # Said once, before the models are built, so that one grayscale or RGBA file among many is no surprise.
        for line in dataset_conversion_notes(train, test):
            print(f"note: {line}", file=sys.stderr)
    return train, test


SAMPLE_COLUMNS = ("composite", "trimap", "alpha (predicted)", "alpha (GT)")


def _io_grid(batch: MattingBatch, pred: torch.Tensor) -> np.ndarray:
    """composite | trimap | predicted alpha | GT alpha for the first sample."""
    return make_grid([[batch.composite[0], batch.trimap[0], pred[0].clamp(0, 1), batch.alpha[0]]], labels=SAMPLE_COLUMNS)


def run_training(cfg: Config, opts: RunOptions) -> int:
    """Train; returns the process exit status (0, or ``EXIT_PREEMPTED`` after a signal).

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
    run = TrainingRun(KIND, manager, resume=opts.resume, overwrite=opts.overwrite,
                      budget=Budget(opts.max_minutes, opts.max_steps), folder_flag=FOLDER_FLAG)

    train_set, test_set = build_datasets(cfg, opts)
    generator = build_generator(cfg.model)
    discriminator = build_discriminator(cfg.model)
    if not run.resuming and is_main_process():
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
    # G's and D's means: D steps only every update_n_batches, and a skipped step counts in neither.
    means_g, means_d = RunningMeans(), RunningMeans()
    if run.resuming:
        info = run.restore(objects)
        start_epoch, global_step = info.epoch, info.global_step
        skip_batches = int(info.extra.get("batch_in_epoch", 0))
        means_g.load_state_dict(info.extra.get("means_G", {}))
        means_d.load_state_dict(info.extra.get("means_D", {}))
        if is_main_process():
            print(f"resumed from {run.resume_path}: epoch {start_epoch}, step {global_step}", file=sys.stderr)

    g_model = wrap_ddp(generator, device)
    d_model = wrap_ddp(discriminator, device)
    mean = torch.tensor(cfg.general.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.general.std, device=device).view(1, 3, 1, 1)
    parts = TrainParts(g_model, d_model, opt_g, opt_d, sched_g, sched_d, amp_g, amp_d, mean, std)

    batch_size = cfg.general.batch_size
    sampler = EpochSampler(len(train_set), shuffle=True, seed=seed)
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=opts.num_workers, worker_init_fn=seed_worker, pin_memory=device.type == "cuda")
    config = dataclasses.asdict(cfg)

    def training_state(epoch_done: int, batch_in_epoch: int) -> dict:
        return run.state(epoch=epoch_done, global_step=global_step, objects=objects, config=config,
                         extra={"batch_in_epoch": batch_in_epoch, "means_G": means_g.state_dict(),
                                "means_D": means_d.state_dict()})

    log_dir = Path(cfg.general.log_dir)
    tracker = run.open_tracker(opts.tracker, log_dir, project="alphagan_matting", artifact_location=log_dir / "mlruns",
                               config={**config, "world_size": get_world_size()})
    max_grad_norm = opts.max_grad_norm if opts.max_grad_norm > 0 else None
    lg = t.logging
    with run:
        for epoch in range(start_epoch, t.epoches):
            train_set.set_epoch(epoch)
            sampler.set_epoch(epoch, start=skip_batches * batch_size)
            batch_in_epoch, skip_batches = skip_batches, 0
            g_model.train()
            bar = tqdm(loader, total=sampler.batches_per_epoch(batch_size), initial=batch_in_epoch,
                       desc=f"epoch {epoch + 1}/{t.epoches}", disable=not is_main_process(), leave=False,
                       file=sys.stderr)
            for raw in bar:
                batch = MattingBatch.from_dict(raw).to(device)
                try:
                    out = train_step(parts, batch, cfg, global_step, max_grad_norm)
                except NonFiniteError as exc:
                    bar.close()
                    # Resumable at this batch; the skipped steps before it changed no weights.
                    raise run.diverged(exc, training_state(epoch, batch_in_epoch)) from None
                batch_in_epoch += 1
                if out.d_loss is not None:
                    means_d.add({"loss_D": out.d_loss})
                if out.stepped:
                    global_step += 1
                    losses = out.losses
                    values = {"loss_G": float(losses.total), "loss_alpha": float(losses.alpha),
                              "loss_comp": float(losses.comp), "loss_gan_G": float(losses.gan)}
                    means_g.add(values)
                    if out.d_loss is not None:
                        values["loss_D"] = out.d_loss
                    bar.set_postfix({k: f"{v:.4f}" for k, v in {**means_g.local(), **means_d.local()}.items()})
                    if global_step % lg.log_curr_loss_n_batches == 0:
                        tracker.log_metrics({f"train/{k}": v for k, v in values.items()}, global_step)
                    if global_step % lg.log_lr_n_batches == 0:
                        tracker.log_metrics({"lr/G": opt_g.param_groups[0]["lr"],
                                             "lr/D": opt_d.param_groups[0]["lr"]}, global_step)
                    if global_step % lg.log_io_n_batches == 0:
                        tracker.log_image("train/io", _io_grid(batch, out.pred), global_step)
                if run.should_stop(global_step):
                    bar.close()
                    # Captured before validating: the test loader draws from the global RNG, and resume
                    # must continue from the training stream alone.
                    state = training_state(epoch, batch_in_epoch)
                    if run.stop_reason != "signal":
                        # A budget ends the run: the weights it reached may be the best, so validate them.
                        test_means = validate(run, g_model, test_set, cfg, opts, device, precision, tracker,
                                              global_step)
                        save_best_if_better(run.manager, state, test_means.get("SAD"))
                    return run.stop(state, f"at epoch {epoch + 1}, batch {batch_in_epoch}, step {global_step}")
            bar.close()
            means = {f"train_epoch/{k}": v for k, v in {**means_g.reduced(), **means_d.reduced()}.items()}
            means_g, means_d = RunningMeans(), RunningMeans()
            test_means = validate(run, g_model, test_set, cfg, opts, device, precision, tracker, global_step)
            tracker.log_metrics({**means, **{f"test_epoch/{k}": v for k, v in test_means.items()}}, global_step)
            metric = test_means.get("SAD", means.get("train_epoch/loss_G"))
            if is_main_process():
                summary = "  ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in {**means, **test_means}.items())
                print(f"epoch {epoch + 1}/{t.epoches}  step {global_step}  {summary}", file=sys.stderr)
            run.end_epoch(training_state(epoch + 1, 0), epoch + 1, metric)
            if (epoch + 1) % t.save_chkp_n_epoches == 0 and is_main_process():
                save_sample_grid(generator, test_set or train_set, cfg, device, precision,
                                 log_dir / "samples" / f"epoch_{epoch + 1:04d}.png")
    return 0


def validate(run: TrainingRun, g_model, test_set, cfg: Config, opts: RunOptions, device, precision, tracker,
             global_step: int) -> dict[str, float]:
    """:func:`evaluate_epoch`, with the trimap baseline beside it in the tracker (``val/sad`` next to
    ``val/sad_trimap``) and on the console, so a run shows at once whether it beats doing nothing."""
    test_means = evaluate_epoch(g_model, test_set, cfg, opts, device, precision, tracker, global_step)
    if test_means:
        model = {k.lower(): v for k, v in test_means.items() if not k.endswith(f"_{TRIMAP_BASELINE}")}
        baseline = {k.lower().removesuffix(f"_{TRIMAP_BASELINE}"): v for k, v in test_means.items()
                    if k.endswith(f"_{TRIMAP_BASELINE}")}
        line = run.log_validation(model, {TRIMAP_BASELINE: baseline}, global_step)
        print(f"step {global_step}  {line}", file=sys.stderr)
    return test_means


def save_best_if_better(manager: CheckpointManager, state: dict, metric: float | None) -> bool:
    """Write ``best.pth`` from ``state`` when ``metric`` (test SAD) beats the best so far (main process)."""
    if not manager.is_better(metric):
        return False
    manager.best_metric = float(metric)
    if is_main_process():
        save_checkpoint(manager.best_path, manager.stamp(state))
    return True


def evaluate_epoch(g_model, test_set, cfg: Config, opts: RunOptions, device, precision, tracker,
                   global_step: int) -> dict[str, float]:
    """Mean metrics on the test split (main process only; other ranks return ``{}``), logged at ``global_step``.

    Besides the model's ``SAD``/``MSE``/``Grad``/``Conn``, the trimap baseline's (the trimap itself as
    the alpha, unknown = 0.5) as ``SAD_trimap`` etc.
    """
    if test_set is None or not is_main_process():
        return {}
    model = g_model.module if is_distributed() else g_model
    model.eval()
    loader = DataLoader(test_set, batch_size=cfg.general.batch_size, shuffle=False, collate_fn=collate,
                        num_workers=opts.num_workers)
    tl = cfg.test.logging
    all_metrics: list[Metrics] = []
    all_baseline: list[Metrics] = []
    for i, raw in enumerate(loader, start=1):
        batch = MattingBatch.from_dict(raw).to(device)
        metrics, pred = test_step(model, batch, autocast(device, precision))
        all_metrics.extend(metrics)
        all_baseline.extend(trimap_baseline_metrics(batch))
        if i % tl.log_curr_mets_n_batches == 0:
            batch_mean = {k: float(np.mean([m.as_dict()[k] for m in metrics])) for k in metrics[0].as_dict()}
            tracker.log_metrics({f"test/{k}": v for k, v in batch_mean.items()}, global_step)
        if i % tl.log_io_n_batches == 0:
            tracker.log_image("test/io", _io_grid(batch, pred), global_step)
    model.train()
    means = {k: float(np.mean([m.as_dict()[k] for m in all_metrics])) for k in all_metrics[0].as_dict()}
    means.update({f"{k}_{TRIMAP_BASELINE}": float(np.mean([m.as_dict()[k] for m in all_baseline]))
                  for k in all_baseline[0].as_dict()})
    return means


def trimap_baseline_metrics(batch: MattingBatch) -> list[Metrics]:
    """The four metrics of doing nothing: the trimap (0 / 0.5 / 1) taken as the alpha."""
    gt_np = batch.alpha[:, 0].cpu().numpy().astype(np.float64)
    tri_np = batch.trimap[:, 0].cpu().numpy()
    return [compute_metrics(tri.astype(np.float64), g, unit_to_trimap(tri)) for g, tri in zip(gt_np, tri_np, strict=True)]


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
    save_image_grid(path, rows, labels=SAMPLE_COLUMNS)
