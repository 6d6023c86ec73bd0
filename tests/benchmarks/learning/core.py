"""What every package's learning benchmark shares: the adapter contract, the training subprocess, the
TensorBoard reader for the learning curve, and the four outputs (JSON, Markdown, curve, sample grid).

A package adapter (``tests/benchmarks/learning/<package>.py``) says how its recommended recipe trains
on a ``--train-dir``, where the best checkpoint lands, and how the package's own evaluation scores the
model and the baselines on an ``--eval-dir``. The driver does the rest, the same way for all five.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ROOT / "packages"
# The trainer stops itself at --max-minutes; past this much more, the driver stops it (SIGTERM, then kill).
GRACE_SECONDS = 180


@dataclass(frozen=True)
class TrainCommand:
    """A training entry point run as a subprocess: ``python <argv...>`` in ``cwd``."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Curve:
    """The validation metric against global steps, and each baseline's (constant) value beside it."""

    steps: list[int]
    values: list[float]
    baselines: dict[str, float]


@dataclass
class Evaluation:
    """Means over the evaluation images: ``metrics[method][metric]``, the model's under ``"model"``.

    ``grid`` holds a few evaluation images as rows of ``(label, HxWx3 uint8)``, in the order
    input | baselines | model | target.
    """

    metrics: dict[str, dict[str, float]]
    grid: list[list[tuple[str, np.ndarray]]]
    count: int
    notes: dict[str, object] = field(default_factory=dict)


class Adapter:
    """One package's recipe and evaluation; subclass per package."""

    package: str
    main_metric: str
    higher_is_better: bool
    trivial_baseline: str
    classical_baseline: str | None = None

    def train_command(self, train_dir: Path, work: Path, minutes: float, device: str) -> TrainCommand:
        raise NotImplementedError

    def best_checkpoint(self, work: Path) -> Path:
        raise NotImplementedError

    def curve(self, work: Path) -> Curve:
        raise NotImplementedError

    def evaluate(self, checkpoint: Path, eval_dir: Path, work: Path, device: str) -> Evaluation:
        raise NotImplementedError


def package_dir(package: str) -> Path:
    return PACKAGES / package


def first_file(*candidates: Path) -> Path:
    """The first of ``candidates`` that exists (a run stopped early may lack its best file), else the last."""
    return next((path for path in candidates if path.is_file()), candidates[-1])


def run_training(command: TrainCommand, minutes: float, log_path: Path) -> tuple[int, float]:
    """Run the trainer, its output to ``log_path``; returns (exit status, seconds)."""
    env = {**os.environ, **command.env}
    start = time.monotonic()
    with open(log_path, "w") as log:
        print("$ python " + " ".join(command.argv), file=log, flush=True)
        proc = subprocess.Popen([sys.executable, *command.argv], cwd=command.cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status = proc.wait(timeout=minutes * 60 + GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                status = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                status = proc.wait()
    return status, time.monotonic() - start


def read_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """Every ``tag`` value in the TensorBoard event files under ``log_dir``, by step (last write wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[int, float] = {}
    for folder in sorted({p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
        if tag in events.Tags().get("scalars", []):
            found.update({e.step: float(e.value) for e in events.Scalars(tag)})
    return sorted(found.items())


def tensorboard_curve(log_dir: Path, tag: str, baselines: dict[str, str]) -> Curve:
    """A :class:`Curve` from the trainer's TensorBoard log; ``baselines`` maps name -> tag."""
    points = read_scalars(log_dir, tag)
    lines = {}
    for name, baseline_tag in baselines.items():
        values = read_scalars(log_dir, baseline_tag)
        if values:
            lines[name] = values[-1][1]
    return Curve([s for s, _ in points], [v for _, v in points], lines)


# ---------------------------------------------------------------------- outputs
def machine() -> dict[str, object]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            # The trainer inherits OMP_NUM_THREADS; unset, torch takes one thread per physical core.
            "threads": int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def summary(adapter: Adapter, evaluation: Evaluation) -> dict[str, object]:
    metric = adapter.main_metric
    model = evaluation.metrics["model"][metric]
    baselines = {name: values[metric] for name, values in evaluation.metrics.items()
                 if name != "model" and metric in values}
    trivial = baselines[adapter.trivial_baseline]
    margin = model - trivial if adapter.higher_is_better else trivial - model
    return {"main_metric": metric, "higher_is_better": adapter.higher_is_better, "model": model,
            "baselines": baselines, "trivial_baseline": adapter.trivial_baseline,
            "classical_baseline": adapter.classical_baseline, "beats_trivial": bool(margin > 0),
            "margin_over_trivial": margin}


def markdown_table(adapter: Adapter, evaluation: Evaluation) -> str:
    metrics = list(dict.fromkeys(m for values in evaluation.metrics.values() for m in values))
    header = "| method | " + " | ".join(f"**{m}**" if m == adapter.main_metric else m for m in metrics) + " |"
    rows = [header, "| --- |" + " ---: |" * len(metrics)]
    for method, values in evaluation.metrics.items():
        label = method
        if method == adapter.trivial_baseline:
            label += " (trivial baseline)"
        elif method == adapter.classical_baseline:
            label += " (classical reference)"
        cells = [_cell(values.get(m)) for m in metrics]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def plot_curve(adapter: Adapter, curve: Curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(curve.steps, curve.values, marker="o", markersize=3, label="model (validation)")
    for (name, value), style in zip(curve.baselines.items(), ["--", ":", "-.", (0, (5, 1))], strict=False):
        ax.axhline(value, linestyle=style, color="gray", label=name)
    ax.set_xlabel("global step")
    ax.set_ylabel(adapter.main_metric + (" (higher is better)" if adapter.higher_is_better else " (lower is better)"))
    ax.set_title(f"{adapter.package}: validation {adapter.main_metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_grid(rows: list[list[tuple[str, np.ndarray]]], path: Path, cell: int = 192) -> None:
    """Rows of labelled images, each scaled to ``cell`` pixels high, the label above each."""
    from PIL import Image, ImageDraw

    label_h = 14
    tiles = []
    for row in rows:
        scaled = []
        for label, image in row:
            image = np.asarray(image)
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            pil = Image.fromarray(image.astype(np.uint8))
            width = max(1, round(pil.width * cell / pil.height))
            scaled.append((label, pil.resize((width, cell), Image.BILINEAR)))
        tiles.append(scaled)
    width = max(sum(img.width for _, img in row) + 4 * (len(row) - 1) for row in tiles)
    height = len(tiles) * (cell + label_h + 4)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for row in tiles:
        x = 0
        for label, img in row:
            draw.text((x + 2, y + 1), label, fill="black")
            canvas.paste(img, (x, y + label_h))
            x += img.width + 4
        y += cell + label_h + 4
    canvas.save(path)


def run_benchmark(adapter: Adapter, train_dir: Path, eval_dir: Path, minutes: float, out: Path,
                  device: str, train: bool = True) -> dict[str, object]:
    """Train (unless ``train`` is False: then the run already in ``out`` is evaluated again), evaluate,
    write the results."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "run"
    work.mkdir(exist_ok=True)
    command = adapter.train_command(train_dir.resolve(), work.resolve(), minutes, device)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if train:
        started = datetime.datetime.now(datetime.UTC)
        print(f"[learning] {adapter.package}: training {minutes:g} min, log {out / 'train.log'}", file=sys.stderr)
        status, seconds = run_training(command, minutes, out / "train.log")
    elif (out / "train.log").is_file():
        log = out / "train.log"
        started = datetime.datetime.fromtimestamp(log.stat().st_mtime - minutes * 60, datetime.UTC)
        status, seconds = None, None
        print(f"[learning] {adapter.package}: evaluating the run trained in {work} (log {log})", file=sys.stderr)
    else:
        raise SystemExit(f"{out / 'train.log'}: no earlier run to evaluate (drop --evaluate-only)")
    # Other work on the machine slows the trainer: the 15-minute load average at the end says how much.
    load_after = os.getloadavg()[2] if hasattr(os, "getloadavg") else None
    if status not in (0, None):
        print(f"[learning] {adapter.package}: the trainer exited {status}; see {out / 'train.log'}",
              file=sys.stderr)
    checkpoint = adapter.best_checkpoint(work)
    curve = adapter.curve(work)
    print(f"[learning] {adapter.package}: evaluating {checkpoint.name} on {eval_dir}", file=sys.stderr)
    evaluation = adapter.evaluate(checkpoint, eval_dir.resolve(), work, device)
    result = {
        "package": adapter.package, **summary(adapter, evaluation), "metrics": evaluation.metrics,
        "notes": evaluation.notes, "eval_images": evaluation.count, "minutes": minutes, "train_seconds": None if seconds is None else round(seconds, 1),
        "train_exit_status": status, "steps": curve.steps[-1] if curve.steps else None,
        "checkpoint": str(checkpoint.relative_to(out)) if checkpoint.is_relative_to(out) else str(checkpoint),
        "train_files": sorted(str(p.relative_to(train_dir)) for p in train_dir.rglob("*") if p.is_file()),
        "eval_files": sorted(str(p.relative_to(eval_dir)) for p in eval_dir.rglob("*") if p.is_file()),
        "device": device, "machine": {**machine(), "load_average_at_start": load_before,
                                      "load_average_15min_at_end": load_after}, "date": started.isoformat(timespec="seconds"),
        "command": "python " + " ".join(command.argv), "curve": asdict(curve),
    }
    (out / "learning.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(adapter, evaluation)
    verdict = "beats" if result["beats_trivial"] else "falls short of"
    (out / "learning.md").write_text(
        f"## {adapter.package}\n\n{minutes:g} min of training ({result['steps']} steps), "
        f"{started:%Y-%m-%d}, {result['machine']['processor']} ({result['machine']['cpus']} CPUs), device {device}. "
        f"The model {verdict} the trivial baseline ({adapter.trivial_baseline}) on {adapter.main_metric} "
        f"by {abs(result['margin_over_trivial']):.4g}, on {evaluation.count} evaluation images it never trained on.\n\n"
        + table)
    plot_curve(adapter, curve, out / "learning_curve.png")
    if evaluation.grid:
        save_grid(evaluation.grid, out / "samples.png")
    print(table, end="")
    return result
