"""In-process training: overfitting real samples, a real-CSV run, run-folder protection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alphagan_matting.cfg_loader import load_config
from alphagan_matting.dataset import MattingDataset, collate, load_labels, prepare_labels
from alphagan_matting.main import main
from alphagan_matting.schemas import MattingBatch
from alphagan_matting.train_pipeline import steps
from alphagan_matting.train_pipeline.steps import TrainParts, train_step
from alphagan_matting.transforms.trans_pipeline import build_transforms
from alphagan_matting.utils import build_discriminator, build_generator
from shared.amp import MixedPrecision
from shared.checkpoint import load_checkpoint
from shared.errors import ConfigError

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "matting"
needs_data = pytest.mark.skipif(not (DATA / "original").is_dir(), reason=f"real matting samples not found at {DATA}")


@pytest.fixture(autouse=True)
def one_thread():
    # Two cores shared with other jobs: a second intra-op thread mostly spins and waits.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    if not (DATA / "original").is_dir():
        pytest.skip(f"real matting samples not found at {DATA}")
    return prepare_labels(DATA, DATA / "bg", tmp_path_factory.mktemp("labels") / "dataset_labels.csv")


@needs_data
def test_overfits_real_samples(labels):
    """Three fixed real crops: alpha loss must fall well below its start (GAN term on)."""
    torch.manual_seed(0)
    cfg = load_config("configs/quick_test.yaml")
    rows = [r for r in load_labels(labels) if r["split"] == "train"][:3]
    train_tf, _ = build_transforms(64, 64, cfg.general.mean, cfg.general.std)
    ds = MattingDataset(rows, train_tf, True, seed=0)
    batch = MattingBatch.from_dict(collate([ds[i] for i in range(len(ds))]))
    g, d = build_generator(cfg.model), build_discriminator(cfg.model)
    opt_g = torch.optim.AdamW(g.parameters(), lr=2e-3, weight_decay=0)
    opt_d = torch.optim.AdamW(d.parameters(), lr=1e-4, weight_decay=0)
    const = torch.optim.lr_scheduler.LambdaLR
    parts = TrainParts(g, d, opt_g, opt_d, const(opt_g, lambda _: 1.0), const(opt_d, lambda _: 1.0),
                       MixedPrecision("fp32"), MixedPrecision("fp32"),
                       torch.tensor(cfg.general.mean).view(1, 3, 1, 1), torch.tensor(cfg.general.std).view(1, 3, 1, 1))
    g.train()
    history = []
    for step in range(80):
        losses = train_step(parts, batch, cfg, step, max_grad_norm=None).losses
        history.append(float(losses.alpha))
    start, end = sum(history[:3]) / 3, sum(history[-5:]) / 5
    print(f"overfit: alpha loss {start:.4f} -> {end:.4f}")
    assert end < 0.4 * start, f"alpha loss {start:.4f} -> {end:.4f}"


@needs_data
def test_trains_on_real_csv(labels, tmp_path):
    code = main(["--config", "configs/quick_test.yaml", "--csv", str(labels), "--epochs", "1",
                 "--checkpoints-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "tb"), "--tracker", "none"])
    assert code == 0
    assert (tmp_path / "ck" / "latest.pth").is_file() and (tmp_path / "ck" / "best.pth").is_file()
    # A second fresh run must not overwrite the first one's checkpoints.
    before = (tmp_path / "ck" / "latest.pth").read_bytes()
    with pytest.raises(ConfigError, match="holds another run"):
        main(["--config", "configs/quick_test.yaml", "--csv", str(labels), "--checkpoints-dir",
              str(tmp_path / "ck"), "--log-dir", str(tmp_path / "tb"), "--tracker", "none"])
    assert (tmp_path / "ck" / "latest.pth").read_bytes() == before


def _quick_config(tmp_path: Path, *replacements: tuple[str, str]) -> str:
    text = Path(load_config.__code__.co_filename).parent.joinpath("configs", "quick_test.yaml").read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_colab_mode_names_checkpoints_and_resume_auto_finds_them(tmp_path, capsys):
    cfg_path = _quick_config(tmp_path, ("use_colab: 0", "use_colab: 1"), ("name: best\n", "name: best_chkp\n"),
                             ("name: latest\n", "name: last_chkp\n"))
    args = ["--config", cfg_path, "--synthetic", "--synthetic-size", "2", "--checkpoints-dir", str(tmp_path / "ck"),
            "--log-dir", str(tmp_path / "tb"), "--tracker", "none", "--resume", "auto"]
    assert main([*args, "--epochs", "1"]) == 0  # nothing to resume: a fresh start
    assert "--resume auto: no " in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.pth")) == ["best_chkp.pth", "last_chkp.pth"]
    with pytest.raises(ConfigError, match=r"holds another run \(last_chkp\.pth\).*--checkpoints-dir"):
        main([arg for arg in args if arg not in ("--resume", "auto")])
    # A restarted job with the same command line continues the run from its last checkpoint.
    assert main([*args, "--epochs", "2"]) == 0
    assert f"resuming {tmp_path / 'ck' / 'last_chkp.pth'}" in capsys.readouterr().err
    state = load_checkpoint(tmp_path / "ck" / "last_chkp.pth")
    assert (state["epoch"], state["global_step"]) == (2, 2)
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.pth")) == ["best_chkp.pth", "last_chkp.pth"]


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_skipped_steps_neither_count_nor_enter_the_means(tmp_path, monkeypatch):
    """G's second step is non-finite (skipped); D steps every 2nd step: means over what went through."""
    calls, alpha_loss = [], steps.alpha_loss

    def alpha_loss_nan_once(*args, **kwargs):
        calls.append(1)
        loss = alpha_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(steps, "alpha_loss", alpha_loss_nan_once)
    cfg_path = _quick_config(tmp_path, ("update_n_batches: 1", "update_n_batches: 2"))
    code = main(["--config", cfg_path, "--synthetic", "--synthetic-size", "8", "--epochs", "1",
                 "--checkpoints-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "tb")])
    assert code == 0
    state = load_checkpoint(tmp_path / "ck" / "latest.pth")
    assert state["global_step"] == 3  # 4 batches, one skipped
    assert [int(s["step"]) for s in state["state"]["opt_G"]["state"].values()][0] == 3

    scalars = _scalars(tmp_path / "tb")
    assert [step for step, _ in scalars["train/loss_G"]] == [1, 2, 3]
    # D stepped before global steps 0 and 2 (batches 1 and 4), logged at steps 1 and 3.
    assert [step for step, _ in scalars["train/loss_D"]] == [1, 3]
    for name in ("loss_G", "loss_D"):
        values = [v for _, v in scalars[f"train/{name}"]]
        [(step, mean)] = scalars[f"train_epoch/{name}"]
        assert step == 3, f"train_epoch/{name} is logged at the global step"
        assert mean == pytest.approx(sum(values) / len(values), rel=1e-5), name
    assert {step for step, _ in scalars["test/SAD"]} == {3}
