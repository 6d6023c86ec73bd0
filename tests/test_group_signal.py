"""SIGTERM to a trainer's whole process group, DataLoader workers included, through each real entry point.

SLURM, ``timeout`` and container runtimes signal every process of a job. Each trainer runs with two
DataLoader workers in a session of its own; the test holds it inside an optimizer step a few steps into
its second epoch (``tests/torchrun_worker.py``'s pause), sends SIGTERM to the group, and lets it go. The
workers leave the signal to the main process, which finishes the step, saves ``latest.pth`` mid-epoch,
prints one line and exits 75 with no traceback; a resume from that file ends with the weights, optimizer
state and step count of a run never interrupted (CPU, ``--deterministic``), bit for bit.

All ``slow``: three runs with workers per entry point (deblur_unet's alone took 2.5 min on a busy 2-core
machine). In CI, ``shared/tests/test_training.py`` signals the group of a small loop with workers.
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
from shared.preemption import EXIT_PREEMPTED
from tests.entry_points import ROOT, Entry, assert_same_training_state, environment, params, run

WORKER = ROOT / "tests" / "torchrun_worker.py"
EPOCHS = 2
WORKERS = "2"


def _start_in_own_group(entry: Entry, ckpt: Path, record: Path, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, str(WORKER), str(record), str(entry.script_path),
               *entry.command_args(ckpt, EPOCHS, extra)]
    env = dict(environment(), RECORD_PAUSE_AFTER=str(ckpt / "latest.pth"))
    # stderr to a file: progress bars would fill a pipe nobody reads while the test waits for the pause.
    # Beside the checkpoint folder, never in the package folder (as tests.entry_points.run does).
    with (record / "stderr.log").open("w") as err:
        return subprocess.Popen(command, cwd=ckpt.parent, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def _stderr(record: Path) -> str:
    return (record / "stderr.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("entry", params())
def test_sigterm_to_the_process_group_with_workers_preempts_and_resumes_exactly(entry: Entry, tmp_path: Path):
    extra = [*entry.more_steps, entry.workers_flag, WORKERS]
    # Each run in a folder of its own: a trainer's relative defaults (logs, samples) land beside its checkpoints.
    straight = tmp_path / "straight" / "run"
    run(entry, straight, extra, epochs=EPOCHS)

    ckpt, record = tmp_path / "signalled" / "run", tmp_path / "record"
    ckpt.parent.mkdir()
    record.mkdir()
    proc = _start_in_own_group(entry, ckpt, record, extra)
    try:
        deadline = time.time() + 300
        while not (record / "paused").exists():  # inside the 3rd optimizer step of the second epoch
            assert proc.poll() is None, f"the run ended before the pause:\n{_stderr(record)[-3000:]}"
            assert time.time() < deadline, "no pause after 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its DataLoader workers
        (record / "go").touch()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = _stderr(record)

    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    assert err.count("stopped by SIGTERM") == 1, err[-3000:]  # (after a progress bar's \r, not a new line)
    # The workers ignore the signal: only the main process says it received it.
    assert err.count("SIGTERM received") == 1, err[-3000:]

    stopped, final = load_checkpoint(ckpt / "latest.pth"), load_checkpoint(straight / "latest.pth")
    per_epoch = final["global_step"] // EPOCHS
    # Mid-epoch: the first epoch done, the second neither begun nor finished.
    assert stopped["epoch"] == 1 and per_epoch < stopped["global_step"] < final["global_step"], (
        stopped["epoch"], stopped["global_step"], final["global_step"])

    run(entry, ckpt, [*extra, entry.resume_flag, str(ckpt / "latest.pth")], epochs=EPOCHS)
    assert_same_training_state(straight / "latest.pth", ckpt / "latest.pth")

