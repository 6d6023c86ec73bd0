"""Graceful stop on SIGTERM/SIGINT: finish the step, save, exit with a distinct status.

Schedulers (Slurm, Kubernetes, spot instances) send SIGTERM before they kill. The training loop asks
``stop.should_stop()`` after each step; when it says yes, the loop writes ``latest.pth`` and exits
with :data:`EXIT_PREEMPTED`, so a wrapper script can tell "preempted, resume me" from "failed".

Under ``torchrun`` the signal may reach the workers three ways, and each works: sent to ``torchrun``
alone (Kubernetes signals PID 1; Ctrl-C in a terminal reaches only torchrun, whose workers run in
sessions of their own), torchrun forwards it to every worker; sent to every process of the job (Slurm's
``scancel``), each worker gets it twice, from the scheduler and from torchrun; sent to one worker, the
flag is MAX-reduced, so every rank stops after the same step. Rank 0 writes ``latest.pth``, the others
wait for it at a barrier, and every worker exits with :data:`EXIT_PREEMPTED`. ``torchrun`` itself then
exits 1 whatever its workers returned (it raises on the signal it received, or reports the workers'
non-zero statuses as a failure); its log shows each worker's ``exitcode: 75`` when only the workers
were signalled. torchrun waits ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds (default 30) for its workers
after forwarding a signal, then kills them: a step plus a save must fit in that time.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import torch

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"


class GracefulStop:
    """Catches SIGTERM and SIGINT and records that a stop was requested.

    Use as a context manager around the training loop; the previous handlers come back on exit.
    A second SIGINT while a stop is pending raises ``KeyboardInterrupt`` at once, for a user who
    really means it — except under ``torchrun``, where a worker's SIGINT always comes from torchrun
    or from a scheduler signalling every process (so it may arrive twice for one request), never from
    a user's keyboard.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        from shared import distributed

        if self.requested and signum == signal.SIGINT and not distributed.launched_by_torchrun():
            raise KeyboardInterrupt
        if self.requested:
            return  # the same request again (torchrun forwarding what the scheduler also sent us)
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: finishing the current step, then saving", file=sys.stderr)

    def __enter__(self) -> GracefulStop:
        # Signal handlers can only be installed from the main thread (e.g. not inside some test runners).
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def should_stop(self) -> bool:
        """True when this process, or under DDP any rank, has been asked to stop.

        Under DDP the flag is reduced with MAX so that every rank leaves the loop after the same step
        and no rank waits forever in a collective the others have left.
        """
        from shared import distributed

        if not distributed.is_distributed():
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=distributed.collective_device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.requested = bool(flag.item() > 0)
        return self.requested
