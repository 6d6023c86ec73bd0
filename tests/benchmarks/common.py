"""Timing and memory helpers for the benchmarks: median of repetitions after a warm-up, peak RSS
measured in a fresh subprocess so one method's allocations never count against another's."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_isolated_echo(module: str, *args: str, prefix: str = "  ") -> dict:
    """Run ``python -m <module> <args>`` in a fresh process, which prints one JSON line last; return it.

    The child's stderr lines that start with ``prefix`` are echoed as they come.

    For long runs: their progress lines show live, the packages' own notes and warnings do not.
    """
    # stdout goes to a file: a pipe left unread while stderr is followed could fill and stall the child.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)
        errors = []
        for line in proc.stderr:
            if line.startswith(prefix):
                print(line, end="", file=sys.stderr, flush=True)
            errors.append(line)
        if proc.wait() != 0:
            raise RuntimeError(f"{module} {' '.join(args)} failed:\n{''.join(errors)[-2000:]}")
        out.seek(0)
        return json.loads(out.read().strip().splitlines()[-1])


def run_forked(fn: Callable[..., dict], *args: object) -> dict:
    """``fn(*args)`` in a forked child; its dict result plus ``peak_mb``, the child's peak RSS.

    A fork shares the parent's imports, so one interpreter start serves several clean measurements.
    Linux starts a child's peak-RSS mark at its RSS at fork time, not at the parent's peak, so the
    figure is the imports plus what ``fn`` allocated. Fork only from a process that has imported torch
    but not computed with it: a child cannot use an OpenMP thread pool the parent already started.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the parent's code
        os.close(read_end)
        status = 0
        try:
            payload = json.dumps({**fn(*args), "peak_mb": peak_rss_mb()})
        except BaseException:  # noqa: BLE001 - the parent re-raises it with the child's traceback
            payload, status = json.dumps({"error": traceback.format_exc()}), 1
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(payload)
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(payload) if payload else {"error": f"child exited with status {status} and no result"}
    if "error" in result:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}{args} failed in a forked child:\n{result['error'][-2000:]}")
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.system()}")


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    return text.rstrip() + "\n\n" + block + "\n"
