"""The GAN training loop: D step (NS loss), lazy R1, G step (NS loss + L1), step checkpoints, samples, logs."""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gansformer_inpaint.config import Config
from gansformer_inpaint.dataloader import InpaintingDataset, SyntheticInpaintingDataset
from gansformer_inpaint.dataloader.loader import conversion_notes
from gansformer_inpaint.evaluation import hole_metrics, mean_fill
from gansformer_inpaint.models import Discriminator, Generator
from gansformer_inpaint.training import losses
from gansformer_inpaint.training.plot import plot_curves, read_metrics
from shared.amp import MixedPrecision, NonFiniteError, ensure_finite
from shared.checkpoint import CheckpointManager, save_checkpoint
from shared.device import resolve_device
from shared.distributed import cleanup_distributed, init_distributed, is_main_process, wrap_ddp
from shared.errors import ConfigError, DataError
from shared.images import make_grid, save_image
from shared.sampler import EpochSampler
from shared.seed import make_generator, seed_everything, seed_worker
from shared.training import RESUME_AUTO, Budget, RunningMeans, TrainingRun

KIND = "gansformer_inpaint"
ARCH_KEYS = ("img_size", "base_channels", "latent_num", "latent_dim", "num_heads", "num_gansformer_blocks",
             "d_channels")
STEP_FILE = re.compile(r"checkpoint_(\d+)\.pt")
CURVES = ["fixed_hole_l1", "hole_l1", "valid_l1", "g_adv", "d_loss", "r1"]
SAMPLE_COLUMNS = ("masked", "output", "target")


def build_models(cfg: Config) -> tuple[Generator, Discriminator]:
    gen = Generator(cfg.img_size, cfg.base_channels, cfg.latent_num, cfg.latent_dim, cfg.num_heads,
                    cfg.num_gansformer_blocks)
    disc = Discriminator(cfg.d_channels, cfg.latent_dim, cfg.latent_num, cfg.num_heads)
    return gen, disc


def build_optimizers(cfg: Config, gen: nn.Module, disc: nn.Module) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for both; D's lr and betas get StyleGAN2's lazy-regularisation correction ``c = k/(k+1)``."""
    c = cfg.d_reg_interval / (cfg.d_reg_interval + 1)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.learning_rate * cfg.d_lr_ratio * c,
                             betas=(cfg.adam_beta1**c, cfg.adam_beta2**c))
    return opt_g, opt_d


def build_dataset(cfg: Config) -> Dataset:
    if cfg.synthetic:
        return SyntheticInpaintingDataset(cfg.synthetic_size, cfg.img_size, cfg.seed)
    dataset = InpaintingDataset(cfg.data_root, cfg.img_size, cfg.mask_threshold, cfg.random_mask_prob, cfg.flip,
                                cfg.seed)
    if len(dataset) == 0:
        raise DataError(f"{cfg.data_root}: no training pairs")
    return dataset


def build_validation(cfg: Config, train: Dataset) -> tuple[Dataset, str]:
    """The validation pairs, unaugmented, with their own holes, and a word on what they are."""
    if cfg.val_root:
        dataset = InpaintingDataset(cfg.val_root, cfg.img_size, cfg.mask_threshold)
        if len(dataset) == 0:
            raise DataError(f"{cfg.val_root}: no validation pairs")
        return dataset, f"{len(dataset)} held-out pairs of {cfg.val_root}"
    if cfg.synthetic:
        return SyntheticInpaintingDataset(min(4, cfg.synthetic_size), cfg.img_size, cfg.seed), "4 synthetic faces"
    # A copy of the training set (not a second scan of a possibly large folder), unaugmented.
    dataset = copy.copy(train)
    dataset.items, dataset.random_mask_prob, dataset.flip = train.items[:4], 0.0, False
    return dataset, f"the first {len(dataset)} training pairs (no --val-root: not held out)"


VAL_METRICS = ("psnr_hole", "ssim_hole", "l1_hole", "psnr", "ssim")


@torch.no_grad()
def validate(gen: nn.Module, batch: dict[str, torch.Tensor], chunk: int = 8) -> tuple[dict[str, float], dict[str, float]]:
    """Means over ``batch`` at the model's size: the model's metrics and the mean fill's (0..1 scale)."""
    # In chunks: a validation set is one stacked batch, which need not fit through the model at once.
    composed = torch.cat([gen(masked, mask)[1] for masked, mask in
                          zip(batch["masked"].split(chunk), batch["mask"].split(chunk), strict=True)])
    pred, gt = ((composed.float() + 1) / 2).clamp(0, 1).cpu(), ((batch["gt"] + 1) / 2).cpu()
    masked, mask = ((batch["masked"] + 1) / 2).cpu(), batch["mask"].cpu()
    baseline = mean_fill(masked, mask)
    model_m = [hole_metrics(p, t, m) for p, t, m in zip(pred, gt, mask, strict=True)]
    base_m = [hole_metrics(p, t, m) for p, t, m in zip(baseline, gt, mask, strict=True)]
    return ({k: sum(v[k] for v in model_m) / len(model_m) for k in VAL_METRICS},
            {k: sum(v[k] for v in base_m) / len(base_m) for k in VAL_METRICS})


@dataclass
class TrackerOptions:
    backend: str = "wandb"
    project: str = "gansformer-inpaint"
    entity: str | None = None
    run_name: str | None = None
    wandb_optional: bool = False  # the --wandb default: without wandb installed, log locally instead of failing


def wandb_installed() -> bool:
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_tracker(opts: TrackerOptions, out_dir: Path) -> TrackerOptions:
    """``opts``, or local logging (``none``: ``metrics.jsonl``, ``loss_curve.png``, ``samples/``) when W&B
    was only the default and is not installed; an explicit ``--tracker wandb`` without it is refused."""
    if opts.backend != "wandb" or wandb_installed():
        return opts
    if not opts.wandb_optional:
        raise ConfigError("--tracker wandb: wandb is not installed (install the wandb extra, e.g. "
                          "`uv sync --package gansformer_inpaint --extra wandb`), or choose another --tracker")
    if is_main_process():
        # metrics.jsonl needs no extra at all, unlike TensorBoard or MLflow, so it is always there to fall back on.
        print(f"note: wandb is not installed, so --wandb logs locally instead: {out_dir / 'metrics.jsonl'}, "
              f"loss_curve.png and samples/ (install the wandb extra for W&B)", file=sys.stderr)
    return replace(opts, backend="none")


class Trainer:
    """Owns models, optimizers, data and the run (``cfg.checkpoint_dir``; ``--resume``, ``--overwrite``,
    ``--max-minutes`` and ``cfg.max_steps`` go to :class:`shared.training.TrainingRun`)."""

    def __init__(self, cfg: Config, tracker: TrackerOptions | None = None, resume: str | None = None,
                 overwrite: bool = False, max_minutes: float | None = None) -> None:
        self.dist = init_distributed(device=cfg.device)
        self.device = resolve_device(cfg.device)
        self.out_dir = Path(cfg.checkpoint_dir)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.tracker_options = resolve_tracker(tracker or TrackerOptions(backend="none"), self.out_dir)
        # best.pth: the highest validation hole PSNR (the metric the benchmark judges), not a training loss.
        manager = CheckpointManager(self.out_dir, save_every_n_epochs=0, monitor="val/psnr_hole", mode="max")
        if resume == RESUME_AUTO and not manager.latest_path.exists():
            # An epoch can be long: a job killed inside its first one has only step checkpoints to go on.
            steps = [int(m[1]) for p in self.out_dir.glob("checkpoint_*.pt") if (m := STEP_FILE.fullmatch(p.name))]
            if steps:
                resume = str(self.out_dir / f"checkpoint_{max(steps)}.pt")
                if is_main_process():
                    print(f"--resume auto: no {manager.latest_path}, resuming {resume}", file=sys.stderr)
        self.run = TrainingRun(KIND, manager, resume=resume, overwrite=overwrite,
                               budget=Budget(max_minutes, cfg.max_steps or None), extra_files=("metrics.jsonl",))
        saved = (self.run.checkpoint or {}).get("config", {})
        for key in set(ARCH_KEYS) & saved.keys():  # the checkpoint's: resuming with other sizes could only fail
            setattr(cfg, key, saved[key])
        self.cfg = cfg.validate()
        seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
        self.dataset = build_dataset(cfg)
        self.sampler = EpochSampler(len(self.dataset), shuffle=True, seed=cfg.seed,
                                    rank=self.dist.rank, world_size=self.dist.world_size)
        gen, disc = build_models(cfg)
        self.gen_module, self.disc_module = gen.to(self.device), disc.to(self.device)
        self.gen, self.disc = wrap_ddp(self.gen_module, self.device), wrap_ddp(self.disc_module, self.device)
        self.opt_g, self.opt_d = build_optimizers(cfg, self.gen_module, self.disc_module)
        # Both guards watch both models: G's step runs D's forward too, and either can poison D's statistics.
        models = [self.gen_module, self.disc_module]
        self.amp_g = MixedPrecision(cfg.precision, self.device, modules=models)
        self.amp_d = MixedPrecision(cfg.precision, self.device, modules=models)
        # Where the run is: epochs done, batches of the current epoch done, G steps that went through.
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.means = RunningMeans()
        self.step_files: list[str] = []  # this run's checkpoint_<step>.pt, oldest first (--keep-last prunes)
        self._resume_or_start()
        self.sample_batch = self._fixed_samples()
        val_data, self.val_source = build_validation(cfg, self.dataset)
        if is_main_process():
            # Said once per run, so that one grayscale or RGBA file among many is no surprise.
            for line in conversion_notes([self.dataset, val_data]):
                print(f"note: {line}", file=sys.stderr)
        self.val_batch = self._stack(val_data, len(val_data))
        self.validated_at = -1

    def stateful(self) -> dict:
        return {"generator": self.gen_module, "discriminator": self.disc_module, "opt_g": self.opt_g,
                "opt_d": self.opt_d, "amp_g": self.amp_g, "amp_d": self.amp_d}

    def _resume_or_start(self) -> None:
        """Restore a resumed run's position; make ``metrics.jsonl`` hold exactly what this run has logged."""
        extra, run = {}, self.run
        if run.resuming:
            info = run.restore(self.stateful())
            extra, self.global_step = info.extra, info.global_step
            self.epoch, self.batch_in_epoch = int(extra.get("epoch", info.epoch)), int(extra.get("batch_in_epoch", 0))
            self.means.load_state_dict(extra.get("running", {}))
            self.step_files = list(extra.get("step_checkpoints", []))
            if is_main_process():
                print(f"resumed from {run.resume_path}: epoch {self.epoch}, batch {self.batch_in_epoch}, "
                      f"step {self.global_step}", file=sys.stderr)
        if is_main_process():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ours = run.resuming and run.resume_path.parent.resolve() == self.out_dir.resolve()
            with self.metrics_path.open("a") as handle:
                # A new run (--overwrite too) starts its own file; a resumed one drops what was logged after
                # its checkpoint, which it logs again.
                size = handle.tell()
                handle.truncate(min(int(extra.get("metrics_bytes", size)), size) if ours else 0)

    def _fixed_samples(self) -> dict[str, torch.Tensor]:
        old_epoch = getattr(self.dataset, "epoch", 0)
        self.dataset.epoch = 0
        batch = self._stack(self.dataset, min(4, len(self.dataset)))
        self.dataset.epoch = old_epoch
        return batch

    def _stack(self, dataset: Dataset, count: int) -> dict[str, torch.Tensor]:
        items = [dataset[i] for i in range(count)]
        return {k: torch.stack([it[k] for it in items]).to(self.device) for k in ("masked", "gt", "mask")}

    def validation(self) -> float | None:
        """Validate on rank 0 (console + tracker, beside the mean fill); returns the hole PSNR (None elsewhere).

        Runs no random op and changes no state a resumed run depends on (only ``best``'s choice).
        """
        if not is_main_process() or self.validated_at == self.global_step:
            return None
        self.validated_at = self.global_step
        model, baseline = validate(self.gen_module, self.val_batch)
        line = self.run.log_validation(model, {"meanfill": baseline}, self.global_step)
        print(f"step {self.global_step}: {line}", file=sys.stderr)
        return model["psnr_hole"]

    def validate_and_keep_best(self) -> None:
        """A validation between epoch ends: writes ``best.pth`` itself when the hole PSNR improved."""
        metric = self.validation()
        if metric is not None and self.run.manager.is_better(metric):
            self.run.manager.best_metric = metric
            state = self.state()
            ensure_finite(state, f"step {self.global_step}", self.run.manager.best_path)
            save_checkpoint(self.run.manager.best_path, self.run.manager.stamp(state))

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict) -> dict[str, float] | None:
        """One D step (+ lazy R1) and one G step; the logged values, or ``None`` if G's step was skipped."""
        cfg = self.cfg
        masked = batch["masked"].to(self.device, non_blocking=True)
        gt = batch["gt"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        logs: dict[str, float] = {}

        # Discriminator: real vs composed fakes in one forward (DDP allows one forward per backward).
        self.disc.requires_grad_(True)
        with torch.no_grad(), self.amp_g.autocast():
            _, fake = self.gen(masked, mask)
        with self.amp_d.autocast():
            logits = self.disc(torch.cat([gt, fake.float()]), torch.cat([mask, mask])).float()
        real_logits, fake_logits = logits.chunk(2)
        d_loss = losses.d_loss_nonsaturating(real_logits, fake_logits)
        self.amp_d.backward_and_step(d_loss, self.opt_d, max_grad_norm=cfg.max_grad_norm)
        logs.update(d_loss=d_loss.item(), d_real=real_logits.mean().item(), d_fake=fake_logits.mean().item())

        # Lazy R1 every d_reg_interval steps, scaled by the interval so its average strength is r1_gamma.
        if cfg.r1_gamma > 0 and self.global_step % cfg.d_reg_interval == 0:
            real = gt.detach().requires_grad_(True)
            real_logits = self.disc(real, mask).float()  # fp32: a squared gradient overflows fp16
            r1 = losses.r1_penalty(real_logits, real)
            # "+ 0 * logits" keeps every D parameter in the graph (DDP insists).
            reg = r1 * (cfg.r1_gamma / 2) * cfg.d_reg_interval + 0 * real_logits.mean()
            # Not clipped (StyleGAN2 does not clip it either): the penalty, scaled by gamma/2 * interval, is
            # largest exactly when D has grown sharp, and clipping would weaken it then, when it is needed.
            self.amp_d.backward_and_step(reg, self.opt_d)
            logs["r1"] = r1.item()

        # Generator: fool D with the composed image, reconstruct the hole (and the rest) in L1.
        # D is frozen and called unwrapped: no D gradient exists here for DDP to synchronise.
        self.disc.requires_grad_(False)
        with self.amp_g.autocast():
            raw, composed = self.gen(masked, mask)
            adv = losses.g_loss_nonsaturating(self.disc_module(composed, mask).float())
        rec, hole, valid = losses.reconstruction_loss(raw.float(), gt, mask, cfg.hole_weight)
        g_loss = cfg.adv_weight * adv + cfg.l1_weight * rec
        g_step = self.amp_g.backward_and_step(g_loss, self.opt_g, max_grad_norm=cfg.max_grad_norm)
        self.disc.requires_grad_(True)
        logs.update(g_loss=g_loss.item(), g_adv=adv.item(), hole_l1=hole.item(), valid_l1=valid.item())
        return logs if g_step.stepped else None

    # ------------------------------------------------------------------ checkpoints, samples, logs
    def state(self) -> dict:
        size = self.metrics_path.stat().st_size if is_main_process() else 0
        extra = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "running": self.means.state_dict(),
                 "step_checkpoints": list(self.step_files), "metrics_bytes": size}
        return self.run.state(epoch=self.epoch, global_step=self.global_step, objects=self.stateful(),
                              config=self.cfg.to_dict(), extra=extra)

    def save_step_checkpoint(self) -> None:
        """``checkpoint_<step>.pt``; with ``keep_last`` only the newest of *this run's* are kept."""
        path = self.out_dir / f"checkpoint_{self.global_step}.pt"
        if path.name not in self.step_files:
            self.step_files.append(path.name)
        pruned = self.step_files[: -self.cfg.keep_last] if self.cfg.keep_last else []
        self.step_files = self.step_files[len(pruned):]
        state = self.state()
        # On every rank (they hold the same weights), so that all of them stop together if it raises.
        ensure_finite(state, f"step {self.global_step}", path)
        if is_main_process():
            save_checkpoint(path, state)
            for name in pruned:
                (self.out_dir / name).unlink(missing_ok=True)

    @torch.no_grad()
    def save_samples(self) -> None:
        """Grid: one row per sample, masked | output | target, under a header row naming the columns."""
        if not is_main_process():
            return
        s = self.sample_batch
        _, composed = self.gen_module(s["masked"], s["mask"])
        rows = [[(s["masked"][i] + 1) / 2, (composed[i] + 1) / 2, (s["gt"][i] + 1) / 2] for i in range(len(composed))]
        epoch = self.epoch + (self.batch_in_epoch > 0)  # a mid-epoch grid is named after its epoch
        grid = make_grid(rows, labels=SAMPLE_COLUMNS)
        save_image(self.out_dir / "samples" / f"epoch_{epoch:04d}.png", grid)
        self.run.tracker.log_image("samples", grid, self.global_step)

    @torch.no_grad()
    def fixed_hole_l1(self) -> float:
        """Hole L1 of the fixed sample images: a noise-free progress measure (same images, same masks)."""
        s = self.sample_batch
        raw, _ = self.gen_module(s["masked"], s["mask"])
        _, hole, _ = losses.reconstruction_loss(raw.float(), s["gt"], s["mask"], self.cfg.hole_weight)
        return float(hole)

    def _log(self, logs: dict[str, float]) -> None:
        """Tracker keys ``train/<name>``; ``metrics.jsonl`` (and the loss curve) the plain names."""
        if is_main_process():
            self.run.tracker.log_metrics({f"train/{k}": v for k, v in logs.items()}, self.global_step)
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps({"step": self.global_step, **{k: round(v, 6) for k, v in logs.items()}}) + "\n")

    # ------------------------------------------------------------------ the loop
    def train_epoch(self) -> bool:
        """The current epoch from batch ``batch_in_epoch`` on; ``True`` when a signal or the budget stops the run."""
        cfg = self.cfg
        self.dataset.epoch = self.epoch
        self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch * cfg.batch_size)
        loader = DataLoader(self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.workers,
                            worker_init_fn=seed_worker, generator=make_generator(cfg.seed + self.epoch),
                            pin_memory=self.device.type == "cuda")
        batches_per_epoch = self.sampler.batches_per_epoch(cfg.batch_size)
        with tqdm(loader, desc=f"epoch {self.epoch + 1}/{cfg.num_epochs}", disable=not is_main_process(),
                  dynamic_ncols=True, file=sys.stderr) as bar:
            for batch in bar:
                try:
                    logs = self.train_step(batch)
                except NonFiniteError as exc:
                    # Resumable at this batch; the skipped steps before it changed no weights.
                    raise self.run.diverged(exc, self.state()) from None
                self.batch_in_epoch += 1
                if logs is not None:
                    self.global_step += 1
                    self.means.add(logs)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in self.means.local().items()
                                     if k in ("g_loss", "d_loss", "hole_l1")})
                    # Also each epoch's last step, so that a short run (fewer steps than --log-interval)
                    # still leaves a point per epoch, and every R1 step, whose r1 would otherwise appear
                    # only where the two intervals happen to meet.
                    if (self.global_step % cfg.log_interval == 0 or self.global_step == 1
                            or self.batch_in_epoch == batches_per_epoch or "r1" in logs):
                        self._log(logs)
                    if self.global_step % cfg.save_interval == 0:
                        self.save_step_checkpoint()
                    if cfg.val_interval and self.global_step % cfg.val_interval == 0:
                        self.validate_and_keep_best()
                if self.run.should_stop(self.global_step):
                    return True
        return False

    def end_epoch(self) -> dict[str, float]:
        """Epoch means, the fixed-sample hole L1, samples; latest/best through the run."""
        summary = self.means.reduced()
        summary["fixed_hole_l1"] = self.fixed_hole_l1()
        self._log({"fixed_hole_l1": summary["fixed_hole_l1"]})
        if is_main_process():
            print(f"epoch {self.epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(summary.items())),
                  file=sys.stderr)
        self.epoch, self.batch_in_epoch, self.means = self.epoch + 1, 0, RunningMeans()
        if self.epoch % self.cfg.sample_interval == 0 or self.epoch == self.cfg.num_epochs:
            self.save_samples()
        # With --val-interval the steps validate (and write best.pth) themselves. Other ranks pass None.
        val = None if self.cfg.val_interval else self.validation()
        self.run.end_epoch(self.state(), self.epoch, val)
        return summary

    def fit(self) -> dict[str, float]:
        """Train to ``cfg.num_epochs``; returns the last epoch's means. A budget's stop returns too (``latest.pth``,
        samples and loss curve written); a signal's raises ``SystemExit(EXIT_PREEMPTED)`` after ``latest.pth``."""
        cfg, run, opts = self.cfg, self.run, self.tracker_options
        summary, status = {}, 0
        run.open_tracker(opts.backend, self.out_dir, project=opts.project, run_name=opts.run_name,
                         config=cfg.to_dict(), entity=opts.entity)
        if is_main_process():
            print(f"validation: {self.val_source}, beside the mean fill", file=sys.stderr)
        try:
            with run:
                while self.epoch < cfg.num_epochs:
                    stopping = self.train_epoch()
                    if self.batch_in_epoch >= self.sampler.batches_per_epoch(cfg.batch_size):
                        summary = self.end_epoch()
                    if stopping and self.epoch < cfg.num_epochs:
                        if run.stop_reason != "signal":
                            # A budget run must leave a best.pth chosen on validation, wherever it stopped.
                            self.validate_and_keep_best()
                        status = run.stop(self.state(), f"at epoch {self.epoch + 1}, batch {self.batch_in_epoch}")
                        if status == 0 and self.batch_in_epoch:
                            self.save_samples()
                        break
            if status == 0 and is_main_process():
                plot_curves(read_metrics(self.metrics_path), CURVES, self.out_dir / "loss_curve.png",
                            title="gansformer_inpaint training")
        finally:
            cleanup_distributed()
        if status:
            raise SystemExit(status)
        return summary
