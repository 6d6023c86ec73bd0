"""device, errors and preemption: the small modules every entry point touches."""

import os
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


def test_a_numbered_gpu_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"device 'cuda:1' pins every torchrun process to one GPU; use --device cuda"):
        resolve_device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("raised", "status", "line"), [
    ('shared.errors.DataError("data/x.png: image file is empty\\n(0 bytes)")', 2,
     "data/x.png: image file is empty (0 bytes)"),
    # A diverged run is no bad input, and a wrapper script must not requeue it like a preempted one.
    ('shared.amp.NonFiniteError("training diverged: 20 consecutive steps\\nwith non-finite loss")', 3,
     "training diverged: 20 consecutive steps with non-finite loss"),
])
def test_cli_entry_prints_one_line_and_exits_with_the_errors_status(raised, status, line):
    script = textwrap.dedent(f"""
        import shared.amp, shared.errors
        @shared.errors.cli_entry
        def main():
            raise {raised}
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == status
    assert proc.stderr == f"error: {line}\n"


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


@pytest.mark.parametrize(("torchrun", "status"), [(False, 130), (True, EXIT_PREEMPTED)])
def test_second_sigint_stops_at_once_except_under_torchrun(torchrun, status):
    # Under torchrun a worker's SIGINT is forwarded by torchrun or sent by a scheduler to every process,
    # so one request can arrive twice; only a user at a terminal means "now" by a second Ctrl-C.
    script = textwrap.dedent("""
        import os, signal, sys
        from shared.errors import cli_entry
        from shared.preemption import GracefulStop, EXIT_PREEMPTED
        @cli_entry
        def main():
            with GracefulStop() as stop:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                if stop.should_stop():
                    sys.exit(EXIT_PREEMPTED)
        main()
    """)
    env = dict(os.environ)
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    if torchrun:
        env.update(RANK="0", WORLD_SIZE="1")  # what torchrun sets; no process group is needed for one rank
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr


class _FailsInWorker(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        from shared.errors import DataError

        raise DataError("/data/a.png: image file is empty (0 bytes)")


def test_worker_error_is_unwrapped_to_its_own_type_and_message():
    """A DataLoader re-raises a worker's error with the worker's traceback as the message."""
    from shared.errors import DataError, unwrap_worker_error, worker_message

    with pytest.raises(DataError) as info:
        next(iter(torch.utils.data.DataLoader(_FailsInWorker(), num_workers=1)))
    assert "Original Traceback" in str(info.value)  # what the loops and cli_entry have to undo
    error = unwrap_worker_error(info.value)
    assert type(error) is DataError and str(error) == "/data/a.png: image file is empty (0 bytes)"
    plain = DataError("x.png: not a recognised image file")
    assert unwrap_worker_error(plain) is plain and worker_message(plain) == str(plain)
