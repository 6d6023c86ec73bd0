"""Numerical faults and preemption under torchrun, through each package's real training entry point.

* A diverging run (an absurd learning rate: the first step throws the weights to ~1e30 and every later
  forward overflows) skips and logs each non-finite step, then stops with one line on stderr, exit status
  3, and a ``latest.pth`` that loads weights-only and holds only finite numbers: the last good state.
* Under ``torchrun`` (two gloo workers on CPU), SIGTERM or SIGINT makes every rank finish its step, rank 0
  alone write ``latest.pth``, and every worker exit 75 well before torchrun's 30 s kill deadline; a
  resume from that file completes. torchrun itself exits 1 whatever its workers return (see
  ``shared/shared/preemption.py``).

The divergence test of deblur_unet runs in CI; every other case is ``slow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.checkpoint import load_checkpoint
from shared.errors import EXIT_DIVERGED
from shared.preemption import EXIT_PREEMPTED
from tests.entry_points import ENTRIES, ROOT, Entry, environment, nonfinite, params, run, tensors

MAX_CONSECUTIVE_NONFINITE = 20  # shared.amp.MixedPrecision's default, which every loop uses
TORCHRUN_EXIT = 1  # torchrun's own status when it was signalled or a worker exited non-zero
WORKER = ROOT / "tests" / "torchrun_worker.py"


# ---------------------------------------------------------------------------------- numerical faults
@pytest.mark.parametrize("entry", params())
def test_diverging_run_stops_with_one_line_and_a_finite_checkpoint(entry: Entry, tmp_path: Path):
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    proc = run(entry, ckpt, [*entry.more_steps, *entry.diverge(ckpt)], epochs=6, check=False)

    assert proc.returncode == EXIT_DIVERGED, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], lines[-5:]
    assert errors[0].startswith("error: training diverged:"), errors[0]
    assert "non-finite" in errors[0] and f"saved the last good state to {ckpt / 'latest.pth'}" in errors[0]
    skipped = [line for line in lines if line.startswith("warning: skipped a step with non-finite")]
    assert len(skipped) >= MAX_CONSECUTIVE_NONFINITE - 1, lines[-5:]

    state = load_checkpoint(ckpt / "latest.pth")  # weights_only
    assert nonfinite(state) == []
    # Written when training stopped (not an older epoch-end file): an AMP guard's run of skips is in it.
    runs = [v for k, v in tensors(state["state"]).items() if k.endswith("/consecutive_nonfinite")]
    assert max(runs) >= MAX_CONSECUTIVE_NONFINITE


# ------------------------------------------------------------------------------ preemption, torchrun
def _torchrun(entry: Entry, ckpt: Path, record: Path, log: Path, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(WORKER), str(record), str(entry.script_path), *entry.command_args(ckpt, epochs=1000, extra=extra)]
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ckpt.parent, env=environment(), stdout=out,
                                stderr=subprocess.STDOUT)


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"torchrun ended early:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.05)


def _signal(how: str, sig: int, proc: subprocess.Popen, record: Path) -> None:
    workers = [int((record / f"rank{rank}.pid").read_text()) for rank in (0, 1)]
    if how == "torchrun":  # Kubernetes (SIGTERM to PID 1), or Ctrl-C in a terminal
        proc.send_signal(sig)
    elif how == "all":  # Slurm's scancel: every process of the job, workers included
        proc.send_signal(sig)
        for pid in workers:
            os.kill(pid, sig)
    else:  # one worker only: the stop flag is MAX-reduced, so both ranks must still stop together
        os.kill(workers[1], sig)


def _optimizer_steps(state: dict) -> int:
    """Optimizer steps in a checkpoint: Adam's per-parameter step counters, summed over optimizers."""
    total = 0
    for saved in state["state"].values():
        if isinstance(saved, dict) and "param_groups" in saved:
            total += max((int(p["step"]) for p in saved["state"].values()), default=0)
    assert total, "no Adam-style step counter in the checkpoint"
    return total


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _saves(record: Path, rank: int) -> list[str]:
    return (_read(record / f"rank{rank}.saves") or "").split()


VARIANTS = [
    # All slow: two torchrun workers per case. In CI, shared/tests cover the two-rank stop agreement and
    # every package covers a signal stop in one process.
    pytest.param(ENTRIES[0], "torchrun", signal.SIGTERM, id="deblur_unet/train.py-SIGTERM-torchrun",
                 marks=pytest.mark.slow),
    pytest.param(ENTRIES[0], "torchrun", signal.SIGINT, id="deblur_unet/train.py-SIGINT-torchrun",
                 marks=pytest.mark.slow),
    pytest.param(ENTRIES[0], "all", signal.SIGTERM, id="deblur_unet/train.py-SIGTERM-all",
                 marks=pytest.mark.slow),
    pytest.param(ENTRIES[0], "rank1", signal.SIGTERM, id="deblur_unet/train.py-SIGTERM-rank1",
                 marks=pytest.mark.slow),
    *[pytest.param(e, "torchrun", signal.SIGTERM, id=f"{e.id}-SIGTERM-torchrun", marks=e.marks)
      for e in ENTRIES[1:]],
]


@pytest.mark.parametrize(("entry", "how", "sig"), VARIANTS)
def test_signal_under_torchrun_saves_once_and_every_rank_exits(entry: Entry, how: str, sig: int,
                                                               tmp_path: Path):
    ckpt, record, log = tmp_path / "run", tmp_path / "record", tmp_path / "torchrun.log"
    ckpt.mkdir()
    record.mkdir()
    # Several steps per rank and epoch, so that the stop usually comes mid-epoch; deblur_unet runs in CI
    # and its 2 steps per rank already do that.
    extra = [] if entry.package == "deblur_unet" else entry.more_steps
    proc = _torchrun(entry, ckpt, record, log, extra)
    try:
        _wait_for(ckpt / "latest.pth", proc, log)  # one epoch done on both ranks: training is under way
        _signal(how, sig, proc, record)
        sent = time.time()
        status = proc.wait(timeout=60)
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()

    exits = {rank: _read(record / f"rank{rank}.exit") for rank in (0, 1)}
    # No status: the worker was killed, i.e. it hung past torchrun's shutdown deadline.
    assert exits == {0: str(EXIT_PREEMPTED), 1: str(EXIT_PREEMPTED)}, output[-3000:]
    assert took < 25, f"workers took {took:.1f} s to stop (torchrun kills them at 30 s)"
    assert status == TORCHRUN_EXIT, output[-3000:]
    assert _saves(record, 1) == [], "only rank 0 writes checkpoints"
    assert "latest.pth" in _saves(record, 0)

    stopped = load_checkpoint(ckpt / "latest.pth")
    assert nonfinite(stopped) == []
    # latest.pth holds every step taken, wherever the signal fell (mid-epoch, or during an epoch's end).
    taken = {int((record / f"rank{rank}.steps").read_text()) for rank in (0, 1)}
    assert taken == {_optimizer_steps(stopped)}, "the state at the stop was not saved"

    epochs = stopped["epoch"] + 1  # finish the interrupted epoch, in one process
    run(entry, ckpt, [*extra, entry.resume_flag, str(ckpt / "latest.pth")], epochs=epochs)
    final = load_checkpoint(ckpt / "latest.pth")
    # (No step left to take when the stop came on the epoch's last batch: then only the epoch end runs.)
    assert final["epoch"] == epochs and final["global_step"] >= stopped["global_step"]
