"""User-facing errors and the entry-point wrapper that prints them as one line.

A training run fed a bad file should say which file and what is wrong, exit non-zero, and leave
everything it already wrote untouched; a Python traceback says none of that to the person at the
terminal. Library code raises a :class:`UserError` subclass; entry points wrap ``main`` in
:func:`cli_entry`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class UserError(Exception):
    """An error caused by input the user controls (a file, a folder, a flag, a config).

    The message is a single line that names the offending file or key and says what is wrong.
    """


class DataError(UserError):
    """A data file or folder is missing, unreadable, unpaired or malformed."""


class ConfigError(UserError):
    """A config file, key or flag value is invalid."""


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point so that a :class:`UserError` prints ``error: <message>`` and exits 2.

    ``KeyboardInterrupt`` exits 130 without a traceback. Other exceptions keep their traceback:
    they are bugs, and the traceback is what a bug report needs.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message held
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper
