"""In-process training: overfitting real samples, a real-CSV run, run-folder protection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alphagan_matting.cfg_loader import load_config
from alphagan_matting.dataset import MattingDataset, collate, load_labels, prepare_labels
from alphagan_matting.main import main
from alphagan_matting.schemas import MattingBatch
from alphagan_matting.train_pipeline.steps import TrainParts, train_step
from alphagan_matting.transforms.trans_pipeline import build_transforms
from alphagan_matting.utils import build_discriminator, build_generator
from shared.amp import MixedPrecision
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
        losses, _, _ = train_step(parts, batch, cfg, step, max_grad_norm=None)
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
    with pytest.raises(ConfigError, match="already lives in"):
        main(["--config", "configs/quick_test.yaml", "--csv", str(labels), "--checkpoints-dir",
              str(tmp_path / "ck"), "--log-dir", str(tmp_path / "tb"), "--tracker", "none"])
    assert (tmp_path / "ck" / "latest.pth").read_bytes() == before


def test_colab_mode_names_checkpoints(tmp_path):
    text = Path(load_config.__code__.co_filename).parent.joinpath("configs", "quick_test.yaml").read_text()
    cfg_path = tmp_path / "colab.yaml"
    cfg_path.write_text(text.replace("use_colab: 0", "use_colab: 1"))
    code = main(["--config", str(cfg_path), "--synthetic", "--synthetic-size", "2", "--epochs", "1",
                 "--checkpoints-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "tb"), "--tracker", "none"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.pth")) == ["best_chkp.pth", "last_chkp.pth"]
