"""device, errors and preemption: the small modules every entry point touches."""

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from shared.device import resolve_device
from shared.errors import ConfigError
from shared.preemption import EXIT_PREEMPTED


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"device 'cuda' was requested but CUDA is not available; available: .*cpu"):
        resolve_device("cuda")


def test_cli_entry_prints_one_line_and_exits_2():
    script = textwrap.dedent("""
        from shared.errors import cli_entry, DataError
        @cli_entry
        def main():
            raise DataError("data/x.png: image file is empty\\n(0 bytes)")
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "error: data/x.png: image file is empty (0 bytes)\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_step_then_exits_with_preempted_status(tmp_path, sig):
    marker = tmp_path / "saved"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from shared.preemption import GracefulStop, EXIT_PREEMPTED
        with GracefulStop() as stop:
            for step in range(100):
                if step == 3:
                    os.kill(os.getpid(), {int(sig)})
                # the step in flight completes before the loop looks at the flag
                open({str(marker)!r}, "w").write(str(step))
                if stop.should_stop():
                    sys.exit(EXIT_PREEMPTED)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, proc.stderr
    assert marker.read_text() == "3"
