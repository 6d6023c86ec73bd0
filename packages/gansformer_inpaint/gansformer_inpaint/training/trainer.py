"""The GAN training loop: D step (NS loss), lazy R1, G step (NS loss + L1), checkpoints, samples, logs."""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gansformer_inpaint.config import Config
from gansformer_inpaint.dataloader import EpochSampler, InpaintingDataset, SyntheticInpaintingDataset
from gansformer_inpaint.models import Discriminator, Generator
from gansformer_inpaint.training.losses import (
    d_loss_nonsaturating,
    g_loss_nonsaturating,
    r1_penalty,
    reconstruction_loss,
)
from gansformer_inpaint.training.plot import plot_curves, read_metrics
from shared.amp import MixedPrecision, NonFiniteError, diverged, ensure_finite
from shared.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    make_training_state,
    restore_training_state,
    save_checkpoint,
)
from shared.device import resolve_device
from shared.distributed import (
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    is_main_process,
    wrap_ddp,
)
from shared.errors import DataError
from shared.images import save_image_grid
from shared.preemption import EXIT_PREEMPTED, GracefulStop
from shared.seed import make_generator, seed_everything, seed_worker
from shared.tracking import create_tracker

KIND = "gansformer_inpaint"
ARCH_KEYS = ("img_size", "base_channels", "latent_num", "latent_dim", "num_heads", "num_gansformer_blocks",
             "d_channels")
KEEP_STEP_CHECKPOINTS = 3


def build_models(cfg: Config) -> tuple[Generator, Discriminator]:
    gen = Generator(cfg.img_size, cfg.base_channels, cfg.latent_num, cfg.latent_dim, cfg.num_heads,
                    cfg.num_gansformer_blocks)
    disc = Discriminator(cfg.img_size, cfg.d_channels, cfg.latent_dim, cfg.latent_num, cfg.num_heads)
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
    dataset = InpaintingDataset(cfg.data_root, cfg.img_size, cfg.mask_threshold)
    if len(dataset) == 0:
        raise DataError(f"{cfg.data_root}: no training pairs")
    return dataset


@dataclass
class TrackerOptions:
    backend: str = "wandb"
    project: str = "gansformer-inpaint"
    entity: str | None = None
    run_name: str | None = None


class Trainer:
    """Owns models, optimizers, data and the run folder (``cfg.checkpoint_dir``)."""

    def __init__(self, cfg: Config, tracker: TrackerOptions | None = None, resume: str | None = None) -> None:
        self.dist = init_distributed(device=cfg.device)
        self.device = resolve_device(cfg.device)
        state = None
        if resume:
            state = load_checkpoint(resume)
            if state.get("kind") != KIND:
                raise CheckpointError(f"{resume}: checkpoint was written by '{state.get('kind')}', not '{KIND}'")
            saved = state.get("config", {})
            # The architecture is the checkpoint's: resuming with other sizes could only fail.
            for key in ARCH_KEYS:
                if key in saved:
                    setattr(cfg, key, saved[key])
        self.cfg = cfg.validate()
        seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
        self.out_dir = Path(cfg.checkpoint_dir)
        self.dataset = build_dataset(cfg)
        gen, disc = build_models(cfg)
        self.gen_module, self.disc_module = gen.to(self.device), disc.to(self.device)
        self.gen, self.disc = wrap_ddp(self.gen_module, self.device), wrap_ddp(self.disc_module, self.device)
        self.opt_g, self.opt_d = build_optimizers(cfg, self.gen_module, self.disc_module)
        # Both guards watch both models: G's step runs D's forward too, and either can poison D's statistics.
        models = [self.gen_module, self.disc_module]
        self.amp_g = MixedPrecision(cfg.precision, self.device, modules=models)
        self.amp_d = MixedPrecision(cfg.precision, self.device, modules=models)
        self.manager = CheckpointManager(self.out_dir, save_every_n_epochs=0, monitor="hole_l1", mode="min")
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        if state is not None:
            info = restore_training_state(state, self.stateful(), kind=KIND, source=resume)
            self.global_step = info.global_step
            self.epoch = int(info.extra.get("epoch", info.epoch))
            self.batch_in_epoch = int(info.extra.get("batch_in_epoch", 0))
            self.manager.best_metric = info.best_metric
            if is_main_process():
                print(f"resumed from {resume}: epoch {self.epoch}, batch {self.batch_in_epoch}, "
                      f"step {self.global_step}", file=sys.stderr)
        opts = tracker or TrackerOptions(backend="none")
        self.tracker = create_tracker(opts.backend, self.out_dir, project=opts.project, run_name=opts.run_name,
                                      config=cfg.to_dict(), entity=opts.entity)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.sample_batch = self._fixed_samples()

    def stateful(self) -> dict:
        return {"generator": self.gen_module, "discriminator": self.disc_module, "opt_g": self.opt_g,
                "opt_d": self.opt_d, "amp_g": self.amp_g, "amp_d": self.amp_d}

    def _fixed_samples(self) -> dict[str, torch.Tensor]:
        old_epoch = getattr(self.dataset, "epoch", 0)
        self.dataset.epoch = 0
        items = [self.dataset[i] for i in range(min(4, len(self.dataset)))]
        self.dataset.epoch = old_epoch
        return {k: torch.stack([it[k] for it in items]).to(self.device) for k in ("masked", "gt", "mask")}

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.dataset.epoch = epoch
        sampler = EpochSampler(len(self.dataset), self.cfg.seed, epoch, self.cfg.batch_size, start_batch,
                               self.dist.rank, self.dist.world_size)
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=self.cfg.workers, worker_init_fn=seed_worker,
                          generator=make_generator(self.cfg.seed + epoch), pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict) -> dict[str, float]:
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
        d_loss = d_loss_nonsaturating(real_logits, fake_logits)
        self.amp_d.backward_and_step(d_loss, self.opt_d, max_grad_norm=cfg.max_grad_norm)
        logs.update(d_loss=d_loss.item(), d_real=real_logits.mean().item(), d_fake=fake_logits.mean().item())

        # Lazy R1 every d_reg_interval steps, scaled by the interval so its average strength is r1_gamma.
        if cfg.r1_gamma > 0 and self.global_step % cfg.d_reg_interval == 0:
            real = gt.detach().requires_grad_(True)
            real_logits = self.disc(real, mask).float()  # fp32: a squared gradient overflows fp16
            r1 = r1_penalty(real_logits, real)
            # "+ 0 * logits" keeps every D parameter in the graph (DDP insists).
            reg = r1 * (cfg.r1_gamma / 2) * cfg.d_reg_interval + 0 * real_logits.mean()
            self.amp_d.backward_and_step(reg, self.opt_d, max_grad_norm=cfg.max_grad_norm)
            logs["r1"] = r1.item()

        # Generator: fool D with the composed image, reconstruct the hole (and the rest) in L1.
        # D is frozen and called unwrapped: no D gradient exists here for DDP to synchronise.
        self.disc.requires_grad_(False)
        with self.amp_g.autocast():
            raw, composed = self.gen(masked, mask)
            adv = g_loss_nonsaturating(self.disc_module(composed, mask).float())
        rec, hole, valid = reconstruction_loss(raw.float(), gt, mask, cfg.hole_weight)
        g_loss = cfg.adv_weight * adv + cfg.l1_weight * rec
        self.amp_g.backward_and_step(g_loss, self.opt_g, max_grad_norm=cfg.max_grad_norm)
        self.disc.requires_grad_(True)
        logs.update(g_loss=g_loss.item(), g_adv=adv.item(), hole_l1=hole.item(), valid_l1=valid.item())
        return logs

    # ------------------------------------------------------------------ checkpoints and samples
    def _state(self, epoch: int, batch_in_epoch: int) -> dict:
        return make_training_state(kind=KIND, epoch=epoch, global_step=self.global_step, objects=self.stateful(),
                                   best_metric=self.manager.best_metric, config=self.cfg.to_dict(),
                                   extra={"epoch": epoch, "batch_in_epoch": batch_in_epoch})

    def save_step_checkpoint(self, epoch: int, batch_in_epoch: int) -> None:
        path = self.out_dir / f"checkpoint_{self.global_step}.pt"
        state = self._state(epoch, batch_in_epoch)
        # On every rank (they hold the same weights), so that all of them stop together if it raises.
        ensure_finite(state, f"step {self.global_step}", path)
        if not is_main_process():
            return
        save_checkpoint(path, state)
        old = sorted(self.out_dir.glob("checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for path in old[:-KEEP_STEP_CHECKPOINTS]:
            path.unlink(missing_ok=True)

    def save_latest(self, epoch: int, batch_in_epoch: int) -> None:
        if is_main_process():
            save_checkpoint(self.manager.latest_path, self._state(epoch, batch_in_epoch))

    @torch.no_grad()
    def save_samples(self, epoch: int) -> Path | None:
        """Grid: one row per sample, masked | generated | ground truth."""
        if not is_main_process():
            return None
        s = self.sample_batch
        _, composed = self.gen_module(s["masked"], s["mask"])
        rows = [[(s["masked"][i] + 1) / 2, (composed[i] + 1) / 2, (s["gt"][i] + 1) / 2] for i in range(len(composed))]
        path = save_image_grid(self.out_dir / "samples" / f"epoch_{epoch:04d}.png", rows)
        from shared.images import make_grid

        self.tracker.log_image("samples", make_grid(rows), self.global_step)
        return path

    @torch.no_grad()
    def fixed_hole_l1(self) -> float:
        """Hole L1 of the fixed sample images: a noise-free progress measure (same images, same masks)."""
        s = self.sample_batch
        raw, _ = self.gen_module(s["masked"], s["mask"])
        _, hole, _ = reconstruction_loss(raw.float(), s["gt"], s["mask"], self.cfg.hole_weight)
        return float(hole)

    def _log(self, logs: dict[str, float]) -> None:
        if not is_main_process():
            return
        self.tracker.log_metrics({f"train/{k}": v for k, v in logs.items()}, self.global_step)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps({"step": self.global_step, **{k: round(v, 6) for k, v in logs.items()}}) + "\n")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        """Train to ``cfg.num_epochs`` (or ``cfg.max_steps``); returns the last epoch's mean losses."""
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        summary: dict[str, float] = {}
        try:
            with GracefulStop() as stop:
                for epoch in range(self.epoch, cfg.num_epochs):
                    start = self.batch_in_epoch if epoch == self.epoch else 0
                    loader = self._loader(epoch, start)
                    sums: dict[str, float] = defaultdict(float)
                    count, completed = 0, True
                    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.num_epochs}", disable=not is_main_process(),
                               dynamic_ncols=True, file=sys.stderr)
                    for batch_index, batch in enumerate(bar, start=start):
                        try:
                            logs = self.train_step(batch)
                        except NonFiniteError as exc:
                            # Resumable at this batch; the skipped steps before it changed no weights.
                            bar.close()
                            state = self._state(epoch, batch_index)
                            raise diverged(exc, state, self.manager.latest_path) from None
                        self.global_step += 1
                        count += 1
                        for k, v in logs.items():
                            sums[k] += v
                        bar.set_postfix({k: f"{sums[k] / count:.3f}" for k in ("g_loss", "d_loss", "hole_l1")})
                        if self.global_step % cfg.log_interval == 0 or self.global_step == 1:
                            self._log(logs)
                        if self.global_step % cfg.save_interval == 0:
                            self.save_step_checkpoint(epoch, batch_index + 1)
                        if stop.should_stop():
                            self.save_latest(epoch, batch_index + 1)
                            if is_main_process():
                                print(f"stopped by {stop.signal_name or 'signal'}; "
                                      f"saved {self.manager.latest_path}", file=sys.stderr)
                            # Other ranks leaving first would make torchrun kill rank 0 mid-write.
                            barrier()
                            raise SystemExit(EXIT_PREEMPTED)
                        if cfg.max_steps and self.global_step >= cfg.max_steps:
                            completed = batch_index + 1 >= start + len(loader)
                            break
                    bar.close()
                    summary = {k: all_reduce_mean(v / max(count, 1)) for k, v in sums.items()}
                    summary["fixed_hole_l1"] = self.fixed_hole_l1()
                    self._log({"fixed_hole_l1": summary["fixed_hole_l1"]})
                    if is_main_process():
                        print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(summary.items())),
                              file=sys.stderr)
                    if completed:
                        if (epoch + 1) % cfg.sample_interval == 0 or epoch + 1 == cfg.num_epochs:
                            self.save_samples(epoch + 1)
                        metric = summary.get("hole_l1")
                        state = self._state(epoch + 1, 0)
                        ensure_finite(state, f"the end of epoch {epoch + 1}", self.manager.latest_path)
                        self.manager.save(state, epoch + 1,
                                          metric if metric is not None and math.isfinite(metric) else None)
                        self.epoch, self.batch_in_epoch = epoch + 1, 0
                        if cfg.max_steps and self.global_step >= cfg.max_steps:
                            break
                    else:
                        self.save_latest(epoch, batch_index + 1)
                        self.save_samples(epoch + 1)
                        break
            if is_main_process() and self.metrics_path.exists():
                plot_curves(read_metrics(self.metrics_path), ["fixed_hole_l1", "hole_l1", "valid_l1", "g_adv", "d_loss", "r1"],
                            self.out_dir / "loss_curve.png", title="gansformer_inpaint training")
        finally:
            self.tracker.finish()
            cleanup_distributed()
        return summary
