"""A worker lost mid-epoch under torchrun's elastic restart, with ``--resume auto``.

Two local torchrun agents (``--nnodes 2 --nproc-per-node 1``, c10d rendezvous on a free port, gloo on
CPU, ``--max-restarts 3``) train with ``--resume auto``. One worker process (not its agent) is SIGKILLed
while it is held inside an optimizer step a few steps into the second epoch; torchrun restarts the whole
group, every worker continues from the newest checkpoint in the folder, and the run ends with the
weights, optimizer state and step count of an uninterrupted run of the same world size, bit for bit.

The agents run with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, as docs/reliability.md tells users to: with
torch's default, the restarted workers share the agents' store with the group that died, read its gloo
addresses and fail to connect ("Connection refused") until the restarts run out (pytorch issue 135712).

For deblur_unet and gansformer_inpaint; ``slow`` (two two-process runs each).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.entry_points import ENTRIES, ROOT, Entry, assert_same_training_state, environment

WORKER = ROOT / "tests" / "torchrun_worker.py"
EPOCHS = 2
BY_ID = {e.id: e for e in ENTRIES}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _agents(entry: Entry, ckpt: Path, record: Path, logs: Path, env: dict[str, str]) -> list[subprocess.Popen]:
    """Two torchrun agents, as on two machines, meeting at a c10d rendezvous on this host."""
    env = dict(env, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")  # a fresh store for each restarted group
    port = _free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "restart-test",
               "--max-restarts", "3", "--monitor-interval", "0.5",
               str(WORKER), str(record), str(entry.script_path),
               *entry.command_args(ckpt, EPOCHS, [*entry.more_steps, "--resume", "auto"])]
    procs = []
    for node in (0, 1):
        with (logs / f"agent{node}.log").open("w") as out:
            # Beside the checkpoint folder, never in the package folder.
            procs.append(subprocess.Popen(command, cwd=ckpt.parent, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def _wait(procs: list[subprocess.Popen], logs: Path, timeout: float = 500) -> None:
    deadline = time.time() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = "\n".join((logs / f"agent{n}.log").read_text()[-3000:] for n in (0, 1))
    assert [proc.returncode for proc in procs] == [0, 0], output


def _folders(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    folders = tmp_path / name / "run", tmp_path / name / "record", tmp_path / name / "logs"
    folders[1].mkdir(parents=True)
    folders[2].mkdir()
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("entry_id", ["deblur_unet/train.py", "gansformer_inpaint/main.py"])
def test_torchrun_restarts_a_killed_worker_and_resume_auto_ends_as_an_uninterrupted_run(entry_id: str,
                                                                                       tmp_path: Path):
    entry = BY_ID[entry_id]
    straight, straight_record, straight_logs = _folders(tmp_path, "straight")
    _wait(_agents(entry, straight, straight_record, straight_logs, environment()), straight_logs)

    ckpt, record, logs = _folders(tmp_path, "killed")
    env = dict(environment(), RECORD_PAUSE_AFTER=str(ckpt / "latest.pth"), RECORD_PAUSE_RANK="1")
    procs = _agents(entry, ckpt, record, logs, env)
    deadline = time.time() + 300
    while not (record / "paused").exists():  # rank 1 inside its 3rd optimizer step of the second epoch
        assert all(p.poll() is None for p in procs), "an agent ended before the pause"
        assert time.time() < deadline, "no pause after 300 s"
        time.sleep(0.05)
    rank, pid = (record / "paused").read_text().split()
    assert rank == "1" and int(pid) not in (p.pid for p in procs), "the worker, not an agent"
    os.kill(int(pid), signal.SIGKILL)
    _wait(procs, logs)

    output = "".join((logs / f"agent{n}.log").read_text() for n in (0, 1))
    assert "--resume auto: no" in output  # the first start was fresh ...
    assert f"--resume auto: resuming {ckpt / 'latest.pth'}" in output, output[-3000:]  # ... the restart was not
    assert_same_training_state(straight / "latest.pth", ckpt / "latest.pth")
