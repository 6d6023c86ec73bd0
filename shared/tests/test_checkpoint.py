import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from shared.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    make_training_state,
    restore_training_state,
    save_checkpoint,
)


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "a" / "c.pth", {"w": torch.arange(3), "cfg": {"lr": 0.1}})
    state = load_checkpoint(path)
    assert torch.equal(state["w"], torch.arange(3)) and state["cfg"] == {"lr": 0.1}
    assert [p.name for p in path.parent.iterdir()] == ["c.pth"]  # no temp file left behind


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_truncated_empty_or_garbage_files_give_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content is None:  # a real checkpoint cut in half
        save_checkpoint(path, {"w": torch.randn(1000)})
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_full_disk_during_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "latest.pth", {"step": 1})
    real_save = torch.save

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]


def test_save_killed_midway_leaves_previous_checkpoint(tmp_path):
    """A process SIGKILLed while writing a large checkpoint over an existing one."""
    path = tmp_path / "latest.pth"
    save_checkpoint(path, {"step": 0, "w": torch.zeros(10)})
    script = textwrap.dedent(f"""
        import torch, sys
        from shared.checkpoint import save_checkpoint
        big = torch.randn(64_000_000)  # 256 MB: the write takes long enough to be caught mid-way
        print("ready", flush=True)
        for step in range(1, 1000):
            save_checkpoint({str(path)!r}, {{"step": step, "w": big}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    # Kill as soon as a temp file is being written, i.e. mid-save.
    for _ in range(2000):
        if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            break
        subprocess.run(["sleep", "0.005"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(path)  # whichever version it is, it loads whole
    assert state["step"] >= 0 and state["w"].numel() in (10, 64_000_000)


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_restore_names_what_does_not_match(tmp_path):
    model = _model()
    state = make_training_state(kind="pkg_a", epoch=1, global_step=5, objects={"model": model})
    with pytest.raises(CheckpointError, match="written by 'pkg_a', not 'pkg_b'"):
        restore_training_state(state, {"model": _model()}, kind="pkg_b")
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        restore_training_state(state, {"model": other}, kind="pkg_a")
    with pytest.raises(CheckpointError, match="no 'optimizer' state"):
        restore_training_state(state, {"model": _model(), "optimizer": torch.optim.SGD(model.parameters())},
                               kind="pkg_a")


def test_manager_latest_best_periodic_and_pruning(tmp_path):
    manager = CheckpointManager(tmp_path, save_every_n_epochs=2, keep_last=2, mode="min")
    metrics = [5.0, 4.0, 4.5, 3.0, 3.5, 3.2]
    for epoch, metric in enumerate(metrics, start=1):
        manager.save({"epoch": epoch}, epoch, metric)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pth", "checkpoint_epoch_0004.pth", "checkpoint_epoch_0006.pth", "latest.pth"]
    assert load_checkpoint(tmp_path / "latest.pth")["epoch"] == 6
    best = load_checkpoint(tmp_path / "best.pth")
    assert best["epoch"] == 4 and best["best_metric"] == 3.0
    assert not manager.is_better(float("nan"))


def test_pruning_touches_only_this_runs_files(tmp_path):
    """An older run left periodic files for epochs 20 and 30: the new run's epoch-10 file used to be
    pruned right after it was written (sorted below the stale ones), and the stale ones were kept."""
    for epoch in (20, 30):
        save_checkpoint(tmp_path / f"checkpoint_epoch_{epoch:04d}.pth", {"old": True})
    manager = CheckpointManager(tmp_path, save_every_n_epochs=10, keep_last=1)
    manager.save({"epoch": 10}, 10, 1.0)
    assert load_checkpoint(tmp_path / "checkpoint_epoch_0010.pth")["epoch"] == 10
    manager.save({"epoch": 20}, 20, 1.0)
    assert not (tmp_path / "checkpoint_epoch_0010.pth").exists()
    assert load_checkpoint(tmp_path / "checkpoint_epoch_0020.pth")["epoch"] == 20
    assert load_checkpoint(tmp_path / "checkpoint_epoch_0030.pth") == {"old": True}


def test_periodic_files_are_all_kept_by_default_and_remembered_across_resume(tmp_path):
    manager = CheckpointManager(tmp_path, save_every_n_epochs=1)
    for epoch in range(1, 5):
        manager.save({"epoch": epoch}, epoch, 1.0 / epoch)
    assert len(list(tmp_path.glob("checkpoint_epoch_*.pth"))) == 4
    latest = load_checkpoint(tmp_path / "latest.pth")
    assert latest["checkpoints"]["periodic"] == [f"checkpoint_epoch_{e:04d}.pth" for e in range(1, 5)]
    resumed = CheckpointManager(tmp_path, save_every_n_epochs=1, keep_last=2)
    resumed.load_state_dict(latest["checkpoints"])
    resumed.save({"epoch": 5}, 5, 0.1)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch_*.pth")) == [
        "checkpoint_epoch_0004.pth", "checkpoint_epoch_0005.pth"]
