"""Run a training script as a torchrun worker and record, per rank, what it did.

``python -m torch.distributed.run ... tests/torchrun_worker.py RECORD_DIR SCRIPT ARGS...`` runs SCRIPT exactly
as torchrun would (``__main__``, its folder first on ``sys.path``) and writes into RECORD_DIR:

* ``rank<R>.pid`` — the worker's pid, written first, so a test can signal the workers themselves (as
  Slurm does) and not only torchrun (as Kubernetes does);
* ``rank<R>.saves`` — one line per checkpoint file this rank wrote, through ``shared.checkpoint``;
* ``rank<R>.steps`` — how many optimizer steps this rank took (all optimizers together), to compare with
  the step counters inside the checkpoint left behind;
* ``rank<R>.exit`` — the status the script exited with. torchrun reports neither a worker's status
  after it forwarded a signal nor which rank wrote what; a worker killed by a signal writes no status.

It also runs a script outside torchrun (as rank 0). With ``RECORD_PAUSE_AFTER=PATH`` (and
``RECORD_PAUSE_STEPS=K``, default 3) the worker of rank ``RECORD_PAUSE_RANK`` (default 0) holds still
inside its K-th optimizer step after PATH appeared: it writes ``paused`` (``<rank> <pid>``) and waits
for a file ``go`` in RECORD_DIR (at most 120 s). A test then signals or kills it at a known point, mid-epoch
when PATH is the first epoch's ``latest.pth``, instead of at whatever moment a timer gives. Once per
RECORD_DIR: a worker that torchrun restarts finds ``paused`` and runs through.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path


def main() -> None:
    record, script, *args = sys.argv[1:]
    record_dir = Path(record)
    rank = os.environ.get("RANK", "0")
    (record_dir / f"rank{rank}.pid").write_text(str(os.getpid()))

    import shared.checkpoint

    real_save = shared.checkpoint.save_checkpoint

    def recording_save(path, state):
        written = real_save(path, state)
        with (record_dir / f"rank{rank}.saves").open("a") as handle:
            handle.write(f"{Path(path).name}\n")
        return written

    # Patched before the script imports it, so `from shared.checkpoint import save_checkpoint` sees it too.
    shared.checkpoint.save_checkpoint = recording_save

    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = 0
    pause_after = os.environ.get("RECORD_PAUSE_AFTER")
    pause_steps = int(os.environ.get("RECORD_PAUSE_STEPS", "3"))
    paused = record_dir / "paused"
    pausing = (pause_after is not None and rank == os.environ.get("RECORD_PAUSE_RANK", "0")
               and not paused.exists())
    seen = 0  # optimizer steps since pause_after appeared

    def count_step(_optimizer, _args, _kwargs) -> None:
        nonlocal steps, seen, pausing
        steps += 1
        if not pausing or (seen == 0 and not Path(pause_after).exists()):
            return
        seen += 1
        if seen == pause_steps:
            pausing = False
            partial = record_dir / "paused.part"  # renamed: a reader never sees it half written
            partial.write_text(f"{rank} {os.getpid()}")
            partial.replace(paused)
            deadline = time.monotonic() + 120
            # A signal arriving here is handled by the script's handler, inside this step.
            while not (record_dir / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)

    register_optimizer_step_post_hook(count_step)

    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    status: int | str = 1
    try:
        runpy.run_path(script, run_name="__main__")
        status = 0
    except SystemExit as exc:
        code = exc.code
        status = 0 if code is None else code if isinstance(code, int) else 1
        raise
    finally:
        (record_dir / f"rank{rank}.steps").write_text(str(steps))
        (record_dir / f"rank{rank}.exit").write_text(str(status))


if __name__ == "__main__":
    main()
