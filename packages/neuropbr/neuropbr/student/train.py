"""Student distillation training: ``student/train.py`` / ``neuropbr-student-train``.

Reads renders and ground truth from the PNG dataset (``--input-dir``, ``--output-dir``) and the
teacher's predictions from shards (``--shards-dir``, written by ``teacher_infer.py``), and trains
one of the students (``--config configs/mobilenetv3_512.py`` …) on the distillation loss.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from neuropbr.maps import maps_for_display, tensor_to_maps
from neuropbr.student.config import StudentConfig, config_from_dict, load_student_config
from neuropbr.student.data import StudentDataset, SyntheticStudentDataset
from neuropbr.student.factory import STUDENT_KIND, build_student
from neuropbr.student.losses import DistillationLoss
from neuropbr.utils.dataset import dataset_conversion_notes, train_val_split
from shared import distributed as dist
from shared.amp import PRECISIONS, MixedPrecision, NonFiniteError
from shared.checkpoint import CheckpointManager, save_checkpoint
from shared.device import resolve_device
from shared.errors import ConfigError, cli_entry
from shared.images import make_grid, read_image, save_image
from shared.sampler import EpochSampler
from shared.seed import seed_everything, seed_worker
from shared.tracking import TRACKERS
from shared.training import Budget, RunningMeans, TrainingRun, add_run_arguments

BEST_EXPORT = "best_student.pth"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="student/train.py", description="Distil the NeuroPBR teacher into a mobile student.")
    p.add_argument("--config", default="mobilenetv3_512",
                   help="student config: configs/<name>.py path or name (mobilenetv3_512, convattn_student, mobilenetv3_2048)")
    p.add_argument("--shards-dir", help="teacher shards from teacher_infer.py (required unless --synthetic)")
    p.add_argument("--input-dir", help="renders: input/{clean,dirty}/sample_XXXX/{0,1,2}.png + render_metadata.json")
    p.add_argument("--output-dir", help="ground truth: output/<material>/{albedo,roughness,metallic,normal}.png")
    p.add_argument("--metadata-path", help="render_metadata.json (default: <input-dir>/render_metadata.json)")
    p.add_argument("--checkpoint-dir", default="./checkpoints_student", help="latest/best/periodic checkpoints, logs, samples")
    p.add_argument("--synthetic", action="store_true", help="procedural materials instead of a dataset (shards optional)")
    p.add_argument("--synthetic-samples", type=int, default=8, help="materials in the --synthetic dataset (default 8)")
    p.add_argument("--synthetic-seed", type=int, default=0, help="seed of the --synthetic materials (match teacher_infer.py)")
    p.add_argument("--render-curriculum", type=int, choices=(0, 1, 2), help="0 clean, 1 clean+dirty, 2 dirty")
    p.add_argument("--image-size", type=int, help="override input size; output size follows (× sr_scale)")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--batch-size", type=int, help="override training.batch_size (per process)")
    p.add_argument("--lr", type=float, help="override training.lr")
    p.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap steps per epoch (0 = full epoch; smoke tests)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default data.num_workers)")
    p.add_argument("--pretrained", help="local torchvision MobileNetV3-Large ImageNet weights (.pth)")
    p.add_argument("--device", default=None, help="auto | cuda | mps | cpu (default training.device = auto)")
    p.add_argument("--precision", choices=PRECISIONS, help="fp32 | fp16 | bf16 autocast (default training.precision)")
    p.add_argument("--seed", type=int, help="override training.seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (bit-exact resume on CPU)")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="checkpoint to resume from (e.g. checkpoints_student/latest.pth); 'auto': latest.pth in "
                        "--checkpoint-dir if there is one, else start fresh")
    p.add_argument("--tracker", choices=TRACKERS, help="tensorboard (default) | mlflow | wandb | none")
    p.add_argument("--tracker-dir", help="where the tracker writes (default <checkpoint-dir>/logs)")
    add_run_arguments(p, resume=False)
    return p


def resolve_config(args: argparse.Namespace, resume_state: dict | None = None) -> StudentConfig:
    """The run's config: the resumed checkpoint's, else ``--config``'s; then CLI overrides."""
    if resume_state is not None:
        if resume_state.get("kind") != STUDENT_KIND:
            raise ConfigError(f"{args.resume}: not a student training checkpoint (kind={resume_state.get('kind')!r})")
        cfg = config_from_dict(resume_state.get("config", {}))
    else:
        cfg = load_student_config(args.config)
    d, t = cfg.data, cfg.training
    if args.image_size:
        d.image_size = args.image_size
        d.output_size = args.image_size * cfg.model.sr_scale
    for attr, section, key in (("epochs", t, "epochs"), ("batch_size", t, "batch_size"), ("lr", t, "lr"),
                               ("seed", t, "seed"), ("precision", t, "precision"), ("tracker", t, "tracker"),
                               ("device", t, "device"), ("num_workers", d, "num_workers"),
                               ("render_curriculum", d, "render_curriculum"), ("pretrained", cfg.model, "pretrained")):
        value = getattr(args, attr)
        if value is not None:
            setattr(section, key, value)
    if t.epochs < 1 or t.batch_size < 1:
        raise ConfigError("--epochs and --batch-size must be >= 1")
    return cfg.validate()


def open_run(args: argparse.Namespace) -> tuple[TrainingRun, StudentConfig]:
    """The run (folder guard, resume, budget) and its config, which a resumed checkpoint brings."""
    fresh = resolve_config(args) if args.resume in (None, "auto") else None

    def checkpoints(cfg: StudentConfig | None) -> CheckpointManager:
        t = (cfg or StudentConfig()).training
        return CheckpointManager(args.checkpoint_dir, t.save_every_n_epochs, t.keep_last, monitor="val_loss")

    run = TrainingRun(STUDENT_KIND, checkpoints(fresh), resume=args.resume, overwrite=args.overwrite,
                      budget=Budget(args.max_minutes, args.max_steps))
    cfg = resolve_config(args, run.checkpoint) if run.resuming else fresh
    run.manager = checkpoints(cfg)
    return run, cfg


def build_dataset(cfg: StudentConfig, args: argparse.Namespace) -> Dataset:
    if args.synthetic:
        if not args.shards_dir:
            print("note: --synthetic without --shards-dir: distilling from ground truth only", file=sys.stderr)
        return SyntheticStudentDataset(cfg, args.synthetic_samples, args.synthetic_seed, args.shards_dir)
    if not args.input_dir or not args.output_dir:
        raise ConfigError("--input-dir and --output-dir are both required: the student loader reads the original "
                          "PNG renders and ground-truth maps from disk while the teacher's predictions come from --shards-dir")
    if not args.shards_dir:
        raise ConfigError("--shards-dir is required: generate it with teacher_infer.py --shards-dir DIR")
    dataset = StudentDataset(cfg, args.input_dir, args.output_dir, args.shards_dir, args.metadata_path)
    if dist.is_main_process():
        # Said once per run (train() builds the dataset once), before any step.
        for line in dataset_conversion_notes(dataset):
            print(f"note: {line}", file=sys.stderr)
    return dataset


@dataclass
class Batch:
    views: torch.Tensor
    target: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor] | None


def to_batch(items, device: torch.device) -> Batch:
    views, target, teacher = (x.to(device, non_blocking=True) for x in items)
    return Batch(views, tensor_to_maps(target), tensor_to_maps(teacher) if teacher.numel() else None)


def cosine_lr(base: float, floor: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``base`` (epoch 0) towards ``floor``, in closed form.

    A closed form of (epoch, epochs) rather than a stateful scheduler: resuming with a larger
    ``--epochs`` continues on the longer schedule, and epoch e's rate never depends on history.
    """
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def evaluate(model, loader, loss_fn, amp, device) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for items in loader:
            batch = to_batch(items, device)
            with amp.autocast():
                pred = model(batch.views)
            pred = {k: v.float() for k, v in pred.items()}
            _, logs = loss_fn(pred, batch.teacher, batch.target)
            n = batch.views.shape[0]
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v * n
            count += n
    model.train()
    return {k: dist.all_reduce_mean(v / max(count, 1)) for k, v in totals.items()}


def save_samples(path: Path, model, dataset: Dataset, cfg: StudentConfig, device: torch.device) -> Path:
    """Grid, rows and columns labelled: the three renders; then the student's, the teacher's (with shards)
    and the ground-truth maps (albedo, roughness, metallic, normal)."""
    views, target, teacher = dataset[0]
    model.eval()
    with torch.no_grad():
        pred = {k: v[0].float().cpu() for k, v in model(views[None].to(device)).items()}
    model.train()
    mean = torch.tensor(cfg.data.mean).view(3, 1, 1)
    std = torch.tensor(cfg.data.std).view(3, 1, 1)
    rows = [[(v * std + mean).clamp(0, 1) for v in views]]
    names = ["renders"]
    for name, maps in (("student", pred), ("teacher", tensor_to_maps(teacher) if teacher.numel() else None),
                       ("truth", tensor_to_maps(target))):
        if maps is not None:
            shown = maps_for_display({k: v[None] for k, v in maps.items()})
            rows.append([shown[k][0] for k in ("albedo", "roughness", "metallic", "normal")])
            names.append(name)
    # The first row holds the three renders, the others the four maps: each header names both.
    labels = ("view 0\nalbedo", "view 1\nrough.", "view 2\nmetal.", "\nnormal")
    return save_image(path, make_grid(rows, labels=labels, row_labels=names))


def export_student(path: Path, model, cfg: StudentConfig) -> Path:
    """Inference checkpoint for the converter/ONNX export: weights + config as plain data."""
    return save_checkpoint(path, {"kind": STUDENT_KIND, "arch": cfg.model.arch, "config": cfg.to_dict(),
                                  "model_state_dict": dist.unwrap_model(model).state_dict()})


def train(args: argparse.Namespace) -> int:
    run, cfg = open_run(args)
    t = cfg.training
    info = dist.init_distributed(device=t.device)
    main = info.is_main
    try:
        seed_everything(t.seed + info.rank, deterministic=args.deterministic)
        device = resolve_device(t.device)
        ckpt_dir = Path(args.checkpoint_dir)
        dataset = build_dataset(cfg, args)
        train_idx, val_idx = train_val_split(dataset.group_keys, cfg.data.val_ratio, t.seed)
        sampler = EpochSampler(train_idx, seed=t.seed)

        model = build_student(cfg).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        amp = MixedPrecision(t.precision, device, modules=[model])
        loss_fn = DistillationLoss(cfg.loss)
        objects = {"model": model, "optimizer": optimizer, "amp": amp}
        start_epoch, global_step, skip_batches, means = 0, 0, 0, RunningMeans()
        if run.resuming:
            resumed = run.restore(objects)
            start_epoch, global_step = resumed.epoch, resumed.global_step
            skip_batches = int(resumed.extra.get("batches_done", 0))
            means.load_state_dict(resumed.extra.get("running", {}))
            if main:
                print(f"Resumed from {run.resume_path}: epoch {start_epoch}, step {global_step}"
                      + (f", {skip_batches} batches into the epoch" if skip_batches else ""))
        model = dist.wrap_ddp(model, device)
        tracker = run.open_tracker(t.tracker, args.tracker_dir or ckpt_dir / "logs", project="neuropbr-student",
                                   config=cfg.to_dict())
        loader_kw = {"batch_size": t.batch_size, "num_workers": cfg.data.num_workers,
                     "pin_memory": device.type == "cuda", "persistent_workers": False, "worker_init_fn": seed_worker}
        val_loader = (DataLoader(dataset, sampler=EpochSampler(val_idx, shuffle=False), **loader_kw)
                      if val_idx else None)

        def state(epoch: int, batches_done: int = 0) -> dict:
            return run.state(epoch=epoch, global_step=global_step, objects=objects, config=cfg.to_dict(),
                             extra={"batches_done": batches_done, "running": means.state_dict()})

        def log_train(logs: dict[str, float]) -> None:
            tracker.log_metrics({f"train/{k}": v for k, v in logs.items()} | {"train/lr": optimizer.param_groups[0]["lr"]},
                                global_step)

        with run:
            for epoch in range(start_epoch, t.epochs):
                set_lr(optimizer, cosine_lr(t.lr, t.min_lr, epoch, t.epochs))
                sampler.set_epoch(epoch, start=skip_batches * t.batch_size)
                loader = DataLoader(dataset, sampler=sampler, shuffle=False, **loader_kw)
                done, skip_batches = skip_batches, 0
                steps = len(loader) if not args.max_steps_per_epoch else max(0, min(len(loader), args.max_steps_per_epoch - done))
                bar = tqdm(itertools.islice(loader, steps), desc=f"Epoch {epoch + 1}", disable=not main, total=steps,
                           dynamic_ncols=True)
                last, logged = None, False
                for items in bar:
                    batch = to_batch(items, device)
                    with amp.autocast():
                        pred = model(batch.views)
                    pred = {k: v.float() for k, v in pred.items()}
                    loss, logs = loss_fn(pred, batch.teacher, batch.target)
                    try:
                        result = amp.backward_and_step(loss, optimizer, max_grad_norm=t.grad_clip_norm)
                    except NonFiniteError as exc:
                        bar.close()
                        # Resumable at this batch; the skipped steps before it changed no weights.
                        raise run.diverged(exc, state(epoch, done)) from None
                    done += 1
                    if result.stepped:
                        global_step += 1
                        means.add(logs)
                        last = logs
                        bar.set_postfix(loss=f"{means.local()['loss']:.4f}")
                        if global_step % t.log_every_n_steps == 0:
                            log_train(logs)
                            logged = True
                    if run.should_stop(global_step):
                        bar.close()
                        return run.stop(state(epoch, done), f"at epoch {epoch + 1}, batch {done}")
                bar.close()
                if last is not None and not logged:
                    log_train(last)  # an epoch shorter than log_every_n_steps still charts its train/* values
                train, means = means.reduced(), RunningMeans()
                val = evaluate(model, val_loader, loss_fn, amp, device) if val_loader else {}
                metric = val.get("loss", train.get("loss"))
                improved = run.manager.is_better(metric)
                written = run.end_epoch(state(epoch + 1), epoch + 1, metric)
                tracker.log_metrics({f"epoch/train_{k}": v for k, v in train.items()} | {"epoch": epoch + 1}
                                    | {f"val/{k}": v for k, v in val.items()}, global_step)
                if not main:
                    continue
                print(f"Epoch {epoch + 1} Summary:"
                      + (f"\n  Distillation Loss: {train['loss']:.4f}" if "loss" in train else ""))
                if val:
                    print(f"[Validation] Epoch {epoch + 1} - Loss: {val['loss']:.4f}")
                if improved:
                    export_student(ckpt_dir / BEST_EXPORT, model, cfg)
                for path in written:
                    print(f"Saved checkpoint: {path}")
                if (epoch + 1) % t.log_images_every_n_epochs == 0 or epoch + 1 == t.epochs:
                    grid = save_samples(ckpt_dir / "samples" / f"epoch_{epoch + 1:04d}.png", dist.unwrap_model(model),
                                        Subset(dataset, val_idx or train_idx), cfg, device)
                    tracker.log_image("samples", read_image(grid), global_step)
        return 0
    finally:
        dist.cleanup_distributed()


def main(argv: list[str] | None = None) -> int:
    """Console script ``neuropbr-student-train``."""
    code = cli_entry(lambda: train(build_parser().parse_args(argv)))()
    if code:
        raise SystemExit(code)
    return 0


if __name__ == "__main__":
    main()
