"""Crash and resume, through each package's real training entry point.

A run is SIGKILLed at a random moment after its first ``latest.pth``, resumed from that file, and must
end with the same weights, optimizer state and step count, bit for bit, as a run never interrupted
(CPU, ``--deterministic``). One package runs in CI; the others are ``slow`` and run before submitting
(the results are recorded in docs/reliability.md).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Entry:
    package: str
    script: str
    args: list[str]  # everything but checkpoint folder, resume and epochs
    checkpoint_flag: str = "--checkpoint-dir"
    epochs_flag: str = "--epochs"
    resume_flag: str = "--resume"
    epochs: int = 3
    marks: list = field(default_factory=list)


SLOW = [pytest.mark.slow]
ENTRIES = [
    Entry("deblur_unet", "train.py",
          ["--synthetic", "--synthetic-samples", "8", "--batch-size", "2", "--patch-size", "32", "--base-ch", "8",
           "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic", "--device", "cpu",
           "--sample-every", "0"]),
    Entry("abpn_retouch", "trainer.py",
          ["--synthetic", "--synthetic-count", "2", "--synthetic-size", "96", "--batch-size", "1", "--patch-size", "64",
           "--stride", "48", "--base-channels", "8", "--refine-channels", "8", "--perceptual-size", "32",
           "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic", "--device", "cpu",
           "--precision", "fp32", "--sample-save-freq", "0"],
          checkpoint_flag="--save-dir", epochs_flag="--num-epochs", marks=SLOW),
    Entry("alphagan_matting", "main.py",
          ["--config", "configs/quick_test.yaml", "--synthetic", "--synthetic-size", "4", "--tracker", "none",
           "--seed", "7", "--deterministic", "--device", "cpu", "--log-dir", "{tmp}/logs"],
          checkpoint_flag="--checkpoints-dir", marks=SLOW),
    Entry("gansformer_inpaint", "main.py",
          ["--synthetic", "--synthetic-size", "4", "--batch-size", "2", "--img-size", "32", "--base-channels", "8",
           "--latent-dim", "32", "--no-wandb", "--workers", "0", "--seed", "7", "--deterministic", "--device", "cpu"],
          marks=SLOW),
    Entry("neuropbr", "train.py",
          ["--config", "quick_test", "--synthetic", "--synthetic-samples", "4", "--image-size", "32",
           "--batch-size", "2", "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic",
           "--device", "cpu"], marks=SLOW),
    Entry("neuropbr", "student/train.py",
          ["--config", "mobilenetv3_512", "--synthetic", "--synthetic-samples", "4", "--image-size", "32",
           "--batch-size", "2", "--tracker", "none", "--num-workers", "0", "--seed", "7", "--deterministic",
           "--device", "cpu"], marks=SLOW),
]


def _run(entry: Entry, ckpt: Path, extra: list[str] = (), background: bool = False):
    args = [a.replace("{tmp}", str(ckpt)) for a in entry.args]
    command = [sys.executable, entry.script, *args, entry.checkpoint_flag, str(ckpt),
               entry.epochs_flag, str(entry.epochs), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    cwd = ROOT / "packages" / entry.package
    if background:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _tensors(tree, prefix=""):
    """Flatten nested dicts/lists of a checkpoint into {path: tensor-or-number} for comparison."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(_tensors(value, f"{prefix}/{key}"))
    return flat


def _assert_same_training_state(a: Path, b: Path) -> None:
    from shared.checkpoint import load_checkpoint

    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first["epoch"] == second["epoch"] and first["global_step"] == second["global_step"]
    flat_a, flat_b = _tensors(first["state"]), _tensors(second["state"])
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        other = flat_b[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), f"{key} differs after resume"
        else:
            assert value == other, f"{key}: {value} != {other}"


@pytest.mark.parametrize("entry", [pytest.param(e, id=f"{e.package}/{e.script}", marks=e.marks) for e in ENTRIES])
def test_sigkill_then_resume_matches_uninterrupted_run(entry: Entry, tmp_path: Path):
    straight = tmp_path / "straight"
    _run(entry, straight)

    killed = tmp_path / "killed"
    proc = _run(entry, killed, background=True)
    deadline = time.time() + 300
    while not (killed / "latest.pth").exists():
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))  # somewhere in the next epoch, or during a save
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()

    _run(entry, killed, [entry.resume_flag, str(killed / "latest.pth")])
    _assert_same_training_state(straight / "latest.pth", killed / "latest.pth")
