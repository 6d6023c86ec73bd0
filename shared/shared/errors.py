"""User-facing errors and the entry-point wrapper that prints them as one line.

A training run fed a bad file should say which file and what is wrong, exit non-zero, and leave
everything it already wrote untouched; a Python traceback says none of that to the person at the
terminal. Library code raises a :class:`UserError` subclass; entry points wrap ``main`` in
:func:`cli_entry`.

Exit statuses of every entry point (a wrapper script can act on them):

* 0 — finished;
* 2 (:data:`EXIT_USER_ERROR`) — bad input (file, flag, config): fix it, then run again;
* 4 (:data:`EXIT_SOME_FAILED`) — a folder job (inference over many images) skipped some bad files,
  each reported on its own line, and wrote the outputs of the rest: fix or drop those files and rerun
  them alone (when every file failed the status is 2);
* 3 (:data:`EXIT_DIVERGED`) — training diverged (a run of non-finite losses/gradients): the last good
  state is in ``latest.pth``, but the same settings will diverge again, so do not simply requeue;
* 75 (``shared.preemption.EXIT_PREEMPTED``) — stopped by SIGTERM/SIGINT after saving: resume it;
* 130 (:data:`EXIT_INTERRUPTED`) — a second Ctrl-C: stopped at once, nothing saved;
* 1 — anything else, with a traceback: a bug.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_SOME_FAILED = 4
EXIT_INTERRUPTED = 130

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


class UserError(Exception):
    """An error caused by input the user controls (a file, a folder, a flag, a config).

    The message is a single line that names the offending file or key and says what is wrong.
    """


class DataError(UserError):
    """A data file or folder is missing, unreadable, unpaired or malformed."""


class ConfigError(UserError):
    """A config file, key or flag value is invalid."""


class InputsFailed(DataError):
    """Some files of a folder job were bad and skipped; the others were processed.

    :attr:`exit_status` is :data:`EXIT_SOME_FAILED` when anything was written, else
    :data:`EXIT_USER_ERROR`, so a wrapper script can tell "partly done" from "nothing done".
    """

    def __init__(self, message: str, failed: list, succeeded: int) -> None:
        super().__init__(message)
        self.failed = failed
        self.succeeded = succeeded
        self.exit_status = EXIT_SOME_FAILED if succeeded else EXIT_USER_ERROR


class TrainingStopped(Exception):
    """The run cannot usefully go on, for a known reason that is neither bad input nor a bug.

    Like a :class:`UserError` it is reported as one line, but with its own :attr:`exit_status` so that a
    wrapper script can tell, say, "diverged" from "bad flag". The message says what happened and what
    was saved.
    """

    exit_status = 1


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point so that a :class:`UserError` prints ``error: <message>`` and exits 2.

    (Or its own ``exit_status`` where it has one, as :class:`InputsFailed` does.)

    A :class:`TrainingStopped` prints the same way and exits with its ``exit_status``;
    ``KeyboardInterrupt`` exits 130 without a traceback. Other exceptions keep their traceback:
    they are bugs, and the traceback is what a bug report needs.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            raise SystemExit(getattr(exc, "exit_status", EXIT_USER_ERROR)) from None
        except TrainingStopped as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            raise SystemExit(exc.exit_status) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper


def worker_message(exc: BaseException) -> str:
    """``exc``'s own message, also when a DataLoader worker raised it.

    A DataLoader re-raises a worker's exception as the same type with the worker's whole traceback as
    its message ("Caught ImageReadError in DataLoader worker process 0. Original Traceback ..."); the
    traceback's last line is the original message, behind the exception's qualified name.
    """
    message = str(exc)
    if "in DataLoader worker process" not in message or "Original Traceback" not in message:
        return message
    message = [line.strip() for line in message.splitlines() if line.strip()][-1]
    for name in (f"{type(exc).__module__}.{type(exc).__qualname__}", type(exc).__qualname__):
        if message.startswith(name + ": "):
            return message[len(name) + 2:]
    return message


def unwrap_worker_error(exc: E) -> E:
    """``exc`` as its worker raised it (same type, original message), for loops that re-raise it."""
    message = worker_message(exc)
    return exc if message == str(exc) else type(exc)(message)


def _one_line(exc: BaseException) -> str:
    return " ".join(worker_message(exc).split())  # one line, whatever the message held
