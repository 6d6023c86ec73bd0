"""Graceful stop on SIGTERM/SIGINT: finish the step, save, exit with a distinct status.

Schedulers (Slurm, Kubernetes, spot instances) send SIGTERM before they kill. The training loop asks
``stop.should_stop()`` after each step; when it says yes, the loop writes ``latest.pth`` and exits
with :data:`EXIT_PREEMPTED`, so a wrapper script can tell "preempted, resume me" from "failed".
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
    really means it.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
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
