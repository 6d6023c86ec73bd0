"""The run folder: refusal, --overwrite, kept and pruned step checkpoints, --resume auto, --max-minutes;
W&B as an optional extra; any existing torch device."""

import sys
from pathlib import Path

import pytest
import torch

from gansformer_inpaint.cli import infer_entry, train_entry, train_parser

torch.set_num_threads(1)

TINY = ["--synthetic", "--synthetic-size", "4", "--batch-size", "2", "--no-wandb", "--deterministic",
        "--img-size", "32", "--base-channels", "8", "--d-channels", "8", "--latent-dim", "32", "--latent-num", "4",
        "--num-heads", "4", "--workers", "0", "--device", "cpu", "--log-interval", "1"]


def train(run_dir: Path, *extra: str) -> None:
    train_entry([*TINY, "--checkpoint-dir", str(run_dir), *extra])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def step_files(folder: Path) -> list[str]:
    return sorted((p.name for p in folder.glob("checkpoint_*.pt")), key=lambda n: int(n[11:-3]))


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["global_step"] == sb["global_step"]
    for part in ("generator", "discriminator"):
        for key, value in sa["state"][part].items():
            assert torch.equal(value, sb["state"][part][key]), f"{part}.{key} differs"


def test_second_run_in_the_same_folder_is_refused_and_overwrite_starts_afresh(tmp_path, capsys):
    run = tmp_path / "run"
    train(run, "--epochs", "1", "--save-interval", "1")
    before = files(run)
    assert {"latest.pth", "best.pth", "checkpoint_1.pt", "metrics.jsonl"} <= set(before)
    capsys.readouterr()

    with pytest.raises(SystemExit) as info:
        train(run, "--epochs", "1", "--save-interval", "1")
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {run}: holds another run"), err
    assert files(run) == before

    train(run, "--epochs", "1", "--save-interval", "1", "--seed", "1", "--overwrite")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(before["metrics.jsonl"].decode().splitlines())  # not appended to the old run's
    assert (run / "metrics.jsonl").read_bytes() != before["metrics.jsonl"]


def test_step_checkpoints_are_all_kept_unless_keep_last(tmp_path):
    train(tmp_path / "all", "--epochs", "3", "--save-interval", "1")
    assert step_files(tmp_path / "all") == [f"checkpoint_{s}.pt" for s in range(1, 7)]

    # --keep-last prunes this run's files only, across a resume; another run's file stays.
    run = tmp_path / "pruned"
    run.mkdir()
    (run / "checkpoint_100.pt").write_bytes(b"an earlier run's")
    train(run, "--epochs", "3", "--save-interval", "1", "--keep-last", "2", "--max-steps", "3", "--overwrite")
    assert step_files(run) == ["checkpoint_2.pt", "checkpoint_3.pt", "checkpoint_100.pt"]
    train(run, "--epochs", "3", "--save-interval", "1", "--keep-last", "2", "--resume", str(run / "latest.pth"))
    assert step_files(run) == ["checkpoint_5.pt", "checkpoint_6.pt", "checkpoint_100.pt"]
    assert_same_state(tmp_path / "all" / "checkpoint_6.pt", run / "checkpoint_6.pt")


def test_resume_from_an_older_step_checkpoint_rewrites_metrics_without_duplicates(tmp_path):
    run = tmp_path / "run"
    train(run, "--epochs", "2", "--save-interval", "1")
    uninterrupted = (run / "metrics.jsonl").read_bytes()
    # checkpoint_2.pt is the first epoch's last batch: its epoch-end line comes after it was written.
    train(run, "--epochs", "2", "--save-interval", "1", "--resume", str(run / "checkpoint_2.pt"))
    assert (run / "metrics.jsonl").read_bytes() == uninterrupted


def test_max_minutes_stops_mid_epoch_and_resume_auto_continues(tmp_path, capsys):
    train(tmp_path / "full", "--epochs", "2", "--save-interval", "1")

    run = tmp_path / "run"
    train(run, "--epochs", "2", "--save-interval", "1", "--resume", "auto", "--max-minutes", "1e-6")
    err = capsys.readouterr().err
    assert f"--resume auto: no {run / 'latest.pth'}, starting fresh" in err
    assert "stopped by time budget" in err
    state = torch.load(run / "latest.pth", weights_only=True)
    assert (state["epoch"], state["extra"]["batch_in_epoch"], state["global_step"]) == (0, 1, 1)

    # A second budget stop, then a job killed before it wrote latest.pth: auto takes the newest step file.
    train(run, "--epochs", "2", "--save-interval", "1", "--resume", "auto", "--max-steps", "3")
    (run / "latest.pth").unlink()
    train(run, "--epochs", "2", "--save-interval", "1", "--resume", "auto")
    assert f"resuming {run / 'checkpoint_3.pt'}" in capsys.readouterr().err
    assert_same_state(tmp_path / "full" / "latest.pth", run / "latest.pth")
    assert (run / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()


def exit_code_and_lines(entry, argv, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as info:
        entry(argv)
    return info.value.code, capsys.readouterr().err.strip().splitlines()


def test_wandb_default_without_wandb_installed_logs_locally(tmp_path, monkeypatch, capsys):
    # None in sys.modules makes `import wandb` raise ImportError, as on a machine without the extra.
    monkeypatch.setitem(sys.modules, "wandb", None)
    args = [a for a in TINY if a != "--no-wandb"]

    code, err = exit_code_and_lines(train_entry, [*args, "--tracker", "wandb", "--checkpoint-dir",
                                                  str(tmp_path / "asked")], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --tracker wandb: wandb is not installed"), err
    assert not (tmp_path / "asked").exists()

    run = tmp_path / "run"
    train_entry([*args, "--wandb", "--epochs", "1", "--checkpoint-dir", str(run)])
    notes = [line for line in capsys.readouterr().err.splitlines() if "wandb is not installed" in line]
    assert notes == [f"note: wandb is not installed, so --wandb logs locally instead: {run / 'metrics.jsonl'}, "
                     "loss_curve.png and samples/ (install the wandb extra for W&B)"]
    assert (run / "metrics.jsonl").read_text().strip() and (run / "loss_curve.png").is_file()
    assert not (run / "wandb").exists()
    assert torch.load(run / "latest.pth", weights_only=True)["tracker"]["backend"] == "none"


def test_device_takes_any_torch_device_that_exists(tmp_path, monkeypatch, capsys):
    assert train_parser().parse_args(["--device", "cuda:1"]).device == "cuda:1"  # parsed; refused only if absent
    monkeypatch.chdir(tmp_path)
    # cpu and auto pass the device check and the run goes on to the next thing it checks, the data.
    for device in ("cpu", "auto"):
        code, err = exit_code_and_lines(train_entry, ["--data-root", "missing", "--no-wandb", "--device", device,
                                                      "--checkpoint-dir", "run"], capsys)
        assert code == 2 and err[-1].startswith("error: missing: dataset folder not found"), err
    refused = {"bogus": "error: unknown device 'bogus'; choose one of auto, cuda, mps, cpu"}
    if not torch.cuda.is_available():
        refused["cuda:1"] = "error: device 'cuda:1' was requested but CUDA is not available; available: cpu"
    if not (torch.backends.mps.is_available() or torch.cuda.is_available()):
        refused["mps"] = "error: device 'mps' was requested but MPS is not available; available: cpu"
    for device, message in refused.items():
        # Refused before any work: the checkpoint and images named here do not exist.
        for entry, argv in ((train_entry, [*TINY, "--device", device, "--checkpoint-dir", "run"]),
                            (infer_entry, ["--checkpoint", "none.pth", "--image", "none.png", "--mask", "none.png",
                                           "--output", "out.png", "--device", device])):
            code, err = exit_code_and_lines(entry, argv, capsys)
            assert (code, err) == (2, [message]), (device, err)
