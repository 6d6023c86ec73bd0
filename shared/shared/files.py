"""One atomic file writer for checkpoints, images and sample grids.

The bytes go to a temporary file in the target's folder, are flushed and fsynced, then renamed over the
target: a crash, kill or full disk at any moment leaves the old file or the new one, never a torn one.
The temporary file is created private (``mkstemp``); before the rename it gets the mode any new file of
this process would get (``0o666`` less the umask, 0644 under the usual 022), so teammates and serving
processes on shared storage can read what a run writes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def umask_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` would give a new file in this process."""
    # Reading the umask means setting it; set it straight back. No thread of ours writes files meanwhile.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file and rename it over ``path`` (created with its parents)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, umask_mode())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    return path
