"""The two halves every package's inference and evaluation CLIs share: the file-or-folder job, the metrics report.

Inference (:func:`resolve_jobs`, then :func:`run_jobs`). Where each output goes:

* one image in: ``--output`` ending in an image suffix (``.png``, ``.jpg``, ...) is that file; anything
  else, or an existing folder (even one named ``x.png``), is a folder that receives ``<stem>.png``;
* a folder in: ``--output`` is a folder of ``<stem>.png`` (``<sub>/<stem>.png`` with ``recursive``); an
  existing file, or a name with an image suffix, is refused, since it is almost surely a mistake.

An output that would overwrite an input, or two inputs that would write the same file (``a.jpg`` and
``a.png``), are refused before anything runs. In a folder job a bad file (any :class:`UserError` its
processing raises) is reported on one line and skipped; the rest is processed, and the run ends with
:class:`~shared.errors.InputsFailed` (exit 4, or 2 when nothing was written). A single image is not
wrapped: its error is the run's error. Outputs are written by :func:`shared.images.save_image`, which is
atomic, so a failed image never leaves a partial file.

Evaluation (:func:`report_metrics`): per-image rows ``name → {metric: value}`` and their mean, written as
plain JSON (atomically; non-finite numbers become ``null``, which JSON can hold) and printed as one
aligned table: a header, the per-image rows, and a ``mean (N)`` row.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, DataError, InputsFailed, UserError, _one_line
from shared.images import IMAGE_EXTENSIONS, list_images

Rows = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Job:
    """One image to process and the file its result goes to."""

    source: Path
    target: Path


def resolve_jobs(input_path: str | os.PathLike, output: str | os.PathLike, *,
                 extensions: Iterable[str] = IMAGE_EXTENSIONS, recursive: bool = False) -> list[Job]:
    """The jobs for an image file or a folder of images, by the rules in the module docstring."""
    source, out = Path(input_path), Path(output)
    if not source.exists():
        raise DataError(f"{source}: input file or folder not found")
    if source.is_file():
        is_file_name = out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir()
        jobs = [Job(source, out if is_file_name else out / f"{source.stem}.png")]
    else:
        if out.is_file() or (out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir()):
            raise ConfigError(f"{out}: the input {source} is a folder, so --output must be a folder, not a file")
        files = list_images(source, extensions, recursive=recursive)
        jobs = [Job(f, (out / f.relative_to(source)).with_suffix(".png")) for f in files]
    sources = {job.source.resolve(): job.source for job in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            raise ConfigError(f"{job.target}: --output would overwrite the input {sources[target]}")
        if target in seen:
            raise DataError(f"{job.source}: {seen[target].name} and {job.source.name} would both be written to "
                            f"{job.target}; rename one")
        seen[target] = job.source
    return jobs


def run_jobs(jobs: Sequence[Job], process: Callable[[Job], Iterable[Path]]) -> list[Path]:
    """Run ``process`` (which returns the files it wrote) on every job; the written files, in order.

    Raises:
        InputsFailed: after the last job, when some jobs of several failed (each already reported).
        UserError: a lone job's own error.
    """
    if len(jobs) == 1:
        return _run_one(jobs[0], process)
    written: list[Path] = []
    failed: list[Path] = []
    for job in jobs:
        try:
            written.extend(_run_one(job, process))
        except UserError as exc:
            message = _one_line(exc)
            if str(job.source) not in message and job.source.name not in message:
                message = f"{job.source}: {message}"
            print(f"error: {message} (skipped)", file=sys.stderr, flush=True)
            failed.append(job.source)
    done = len(jobs) - len(failed)
    if failed:
        names = ", ".join(p.name for p in failed[:5]) + (", ..." if len(failed) > 5 else "")
        raise InputsFailed(f"{len(failed)} of {len(jobs)} images failed ({names}); {done} written", failed, done)
    print(f"{done} of {len(jobs)} images written")
    return written


def _run_one(job: Job, process: Callable[[Job], Iterable[Path]]) -> list[Path]:
    start = time.perf_counter()
    written = list(process(job))
    print(f"{job.source} -> {job.target} ({time.perf_counter() - start:.2f} s)", flush=True)
    return written


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python data: tensors/arrays/numpy scalars unwrapped, paths as text, inf/nan → None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: Any, *, sort_keys: bool = False) -> Path:
    """Write ``plain(data)`` as indented JSON through a temp file and a rename, so a reader never sees half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(plain(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def format_table(rows: Rows | None, mean: Mapping[str, Any], columns: Sequence[str] | None = None, *,
                 labels: Mapping[str, str] | None = None, name_header: str = "image",
                 mean_label: str | None = None) -> str:
    """An aligned table: header, one line per row (if ``rows``), then the mean row, labelled ``mean (N)``.

    ``columns`` picks and orders the metrics (default: the keys of ``mean``); ``labels`` renames headers.
    """
    columns = list(columns if columns is not None else mean)
    labels = labels or {}
    if mean_label is None:
        mean_label = f"mean ({len(rows)})" if rows is not None else "mean"
    header = (name_header, *(labels.get(c, c) for c in columns))
    body = [(name, *(_cell(values.get(c)) for c in columns)) for name, values in (rows or {}).items()]
    last = (mean_label, *(_cell(mean.get(c)) for c in columns))
    widths = [max(len(r[i]) for r in (header, *body, last)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded)

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in body), *([rule] if body else []), line(last)])


def report_metrics(path: str | os.PathLike, mean: Mapping[str, Any], rows: Rows | None = None, *,
                   rows_key: str = "per_image", extra: Mapping[str, Any] | None = None,
                   columns: Sequence[str] | None = None, labels: Mapping[str, str] | None = None,
                   name_header: str = "image") -> dict[str, Any]:
    """Write ``{**extra, "count", "mean", rows_key: rows}`` to ``path`` as JSON, print the table; the JSON data.

    ``count`` is the number of rows (kept from ``extra`` when there are none).
    """
    payload: dict[str, Any] = dict(extra or {})
    if rows is not None:
        payload["count"] = len(rows)
    payload["mean"] = mean
    if rows is not None:
        payload[rows_key] = rows
    data = plain(payload)
    write_json(path, data)
    print(format_table(rows, mean, columns, labels=labels, name_header=name_header))
    print(f"wrote {path}")
    return data
