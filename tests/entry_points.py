"""The six training entry points with CI-sized arguments, and how to run them (for the end-to-end tests).

Each ``Entry`` holds a tiny synthetic CPU configuration; a test adds the checkpoint folder, the epoch count
and whatever it is about (``--resume``, an absurd learning rate, ...). Later flags win in argparse, so a
test can append a flag that is already in ``args`` to override it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"
ABSURD_LR = "1e30"  # the first step throws the weights to ~1e30; every later forward overflows


def _alphagan_diverging_config(folder: Path) -> list[str]:
    """alphagan's learning rates live in its YAML config only: write a copy with an absurd one for G."""
    import yaml

    base = PACKAGES / "alphagan_matting" / "alphagan_matting" / "configs" / "quick_test.yaml"
    cfg = yaml.safe_load(base.read_text())
    cfg["train"]["G"]["scheduler"].update(start_lr=float(ABSURD_LR), end_lr=float(ABSURD_LR))
    path = folder / "diverging.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["--config", str(path)]


@dataclass(frozen=True)
class Entry:
    package: str
    script: str
    args: list[str]  # everything but checkpoint folder, resume and epochs
    checkpoint_flag: str = "--checkpoint-dir"
    epochs_flag: str = "--epochs"
    resume_flag: str = "--resume"
    workers_flag: str = "--num-workers"  # DataLoader worker processes
    epochs: int = 3
    marks: list = field(default_factory=list)
    # Flags that make every step diverge (given the checkpoint folder, for files they need).
    diverge: Callable[[Path], list[str]] | None = None
    # More samples per epoch, so that a run of non-finite steps or a signal lands inside an epoch.
    more_steps: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.package}/{self.script}"

    @property
    def cwd(self) -> Path:
        """The package folder, where ``script`` runs as the README shows it; tests run ``script_path`` from a
        temporary folder instead, so that nothing a user left in the package folder changes the outcome."""
        return PACKAGES / self.package

    @property
    def script_path(self) -> Path:
        return PACKAGES / self.package / self.script

    def command_args(self, ckpt: Path, epochs: int | None = None, extra: list[str] = ()) -> list[str]:
        """Script arguments (without the interpreter and script) for a run writing to ``ckpt``."""
        args = [a.replace("{tmp}", str(ckpt)) for a in self.args]
        return [*args, self.checkpoint_flag, str(ckpt), self.epochs_flag, str(epochs or self.epochs), *extra]


def _lr(flag: str) -> Callable[[Path], list[str]]:
    return lambda _folder: [flag, ABSURD_LR]


SLOW = [pytest.mark.slow]
ENTRIES = [
    Entry("deblur_unet", "train.py",
          ["--synthetic", "--synthetic-samples", "8", "--batch-size", "2", "--patch-size", "32", "--base-ch", "8",
           "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic", "--device", "cpu",
           "--sample-every", "0"],
          diverge=_lr("--lr"), more_steps=["--synthetic-samples", "24"]),
    Entry("abpn_retouch", "trainer.py",
          ["--synthetic", "--synthetic-count", "2", "--synthetic-size", "96", "--batch-size", "1", "--patch-size", "64",
           "--stride", "48", "--base-channels", "8", "--refine-channels", "8", "--perceptual-size", "32",
           "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic", "--device", "cpu",
           "--precision", "fp32", "--sample-save-freq", "0"],
          checkpoint_flag="--save-dir", epochs_flag="--num-epochs", marks=SLOW,
          diverge=_lr("--learning-rate"), more_steps=["--synthetic-count", "4"]),
    Entry("alphagan_matting", "main.py",
          ["--config", "configs/quick_test.yaml", "--synthetic", "--synthetic-size", "4", "--tracker", "none",
           "--seed", "7", "--deterministic", "--device", "cpu", "--log-dir", "{tmp}/logs"],
          checkpoint_flag="--checkpoints-dir", marks=SLOW,
          diverge=_alphagan_diverging_config, more_steps=["--synthetic-size", "24"]),
    Entry("gansformer_inpaint", "main.py",
          ["--synthetic", "--synthetic-size", "4", "--batch-size", "2", "--img-size", "32", "--base-channels", "8",
           "--latent-dim", "32", "--no-wandb", "--workers", "0", "--seed", "7", "--deterministic", "--device", "cpu"],
          workers_flag="--workers", marks=SLOW, diverge=_lr("--lr"), more_steps=["--synthetic-size", "24"]),
    Entry("neuropbr", "train.py",
          ["--config", "quick_test", "--synthetic", "--synthetic-samples", "4", "--image-size", "32",
           "--batch-size", "2", "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic",
           "--device", "cpu"], marks=SLOW, diverge=_lr("--lr"), more_steps=["--synthetic-samples", "24"]),
    Entry("neuropbr", "student/train.py",
          ["--config", "mobilenetv3_512", "--synthetic", "--synthetic-samples", "4", "--image-size", "32",
           "--batch-size", "2", "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic",
           "--device", "cpu"], marks=SLOW, diverge=_lr("--lr"), more_steps=["--synthetic-samples", "24"]),
]


def params(entries: list[Entry] = ENTRIES) -> list:
    """``pytest.param`` per entry point, id ``package/script``, slow ones marked."""
    return [pytest.param(e, id=e.id, marks=e.marks) for e in entries]


def environment() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")


def run(entry: Entry, ckpt: Path, extra: list[str] = (), background: bool = False, epochs: int | None = None,
        check: bool = True):
    """Run ``entry`` once in a subprocess; returns the CompletedProcess (or the Popen when ``background``)."""
    command = [sys.executable, str(entry.script_path), *entry.command_args(ckpt, epochs, list(extra))]
    # Run beside the checkpoint folder (a test's tmp_path), never in the package folder: relative defaults
    # (configs/, runs/, mlruns/) then neither read nor write what a user keeps there.
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if background:
        return subprocess.Popen(command, cwd=ckpt.parent, env=environment(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    proc = subprocess.run(command, cwd=ckpt.parent, env=environment(), capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def tensors(tree, prefix: str = "") -> dict:
    """Flatten nested dicts/lists of a checkpoint into {path: tensor-or-number} for comparison."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(tensors(value, f"{prefix}/{key}"))
    return flat


def nonfinite(state: dict) -> list[str]:
    """Paths of the floating-point tensors in a checkpoint's ``state`` that hold a NaN or Inf."""
    return [key for key, value in tensors(state["state"]).items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
            and not torch.isfinite(value).all()]


def assert_same_training_state(a: Path, b: Path) -> None:
    """The checkpoints ``a`` and ``b`` hold the same epoch, step and training state, bit for bit."""
    from shared.checkpoint import load_checkpoint

    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first["epoch"] == second["epoch"] and first["global_step"] == second["global_step"]
    flat_a, flat_b = tensors(first["state"]), tensors(second["state"])
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        other = flat_b[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), f"{key} differs after resume"
        else:
            assert value == other, f"{key}: {value} != {other}"
