"""Files of a downloaded dataset, whether it is an unpacked folder, a zip or a tar archive.

The packages' ``prepare`` commands turn public datasets into their layouts; each reads the archive a
user downloaded in place, without unpacking it first (GoPro alone is tens of gigabytes).
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

import numpy as np

from shared.errors import DataError
from shared.images import read_image

Opener = Callable[[], BinaryIO]
COPY_CHUNK = 1 << 20


def archive_members(source: Path) -> list[tuple[str, Opener]]:
    """``(posix name, opener)`` of every file in a folder, a zip or a tar archive (any compression)."""
    if not source.exists():
        raise DataError(f"{source}: not found")
    if source.is_dir():
        return [(p.relative_to(source).as_posix(), lambda p=p: p.open("rb"))
                for p in sorted(source.rglob("*")) if p.is_file()]
    # The archive stays open for the openers returned; a prepare run is one short process.
    if zipfile.is_zipfile(source):
        archive = zipfile.ZipFile(source)  # noqa: SIM115
        return [(i.filename, lambda i=i: archive.open(i)) for i in archive.infolist() if not i.is_dir()]
    if tarfile.is_tarfile(source):
        archive = tarfile.open(source)  # noqa: SIM115
        return [(i.name, lambda i=i: archive.extractfile(i)) for i in archive.getmembers() if i.isfile()]
    raise DataError(f"{source}: not a folder, a zip or a tar archive")


def copy_member(opener: Opener, target: Path) -> None:
    """Write one member's bytes to ``target`` (folders made as needed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with opener() as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, length=COPY_CHUNK)


def read_member_image(name: str, opener: Opener, scratch: Path, mode: Literal["RGB", "L"] = "RGB") -> np.ndarray:
    """Decode one member through :func:`shared.images.read_image` (whose guards name the file) via a
    scratch copy; an error names the member, not the scratch file."""
    local = scratch / PurePosixPath(name).name
    copy_member(opener, local)
    try:
        return read_image(local, mode=mode)
    except DataError as exc:
        raise DataError(str(exc).replace(str(local), name)) from None
    finally:
        local.unlink(missing_ok=True)
