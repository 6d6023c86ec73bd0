"""The real-data recipe: trimap baseline at validation, best at a budget stop, new backgrounds every
epoch, repeated foregrounds, and the ImageNet ResNet-50 from the torch hub cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alphagan_matting.cfg_loader import load_config
from alphagan_matting.dataset import (
    MattingDataset,
    SyntheticMattingDataset,
    find_backgrounds,
    load_labels,
    prepare_labels,
)
from alphagan_matting.losses import compute_metrics
from alphagan_matting.main import main
from alphagan_matting.schemas import ModelCfg
from alphagan_matting.transforms.trans_pipeline import build_transforms
from alphagan_matting.utils import build_generator, load_pretrained_encoder, unit_to_trimap
from shared.checkpoint import load_checkpoint
from shared.errors import DataError


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_budget_stop_validates_logs_trimap_baseline_and_writes_best(tmp_path, capsys):
    """Stopped by --max-steps in the first epoch: best.pth exists, chosen on the validation SAD, and
    val/sad_trimap equals the SAD of the test trimaps (unknown = 0.5) computed here by hand."""
    args = ["--config", "configs/quick_test.yaml", "--synthetic", "--synthetic-size", "8", "--epochs", "3",
            "--checkpoints-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "tb"), "--max-steps", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "stopped by step budget (1 steps)" in err
    assert (tmp_path / "ck" / "best.pth").is_file()
    best = load_checkpoint(tmp_path / "ck" / "best.pth")
    assert (best["epoch"], best["global_step"], best["extra"]["batch_in_epoch"]) == (0, 1, 1)

    cfg = load_config("configs/quick_test.yaml")
    _, test_tf = build_transforms(cfg.train.crop_size, cfg.test.resize_size, cfg.general.mean, cfg.general.std)
    size = max(cfg.train.crop_size, cfg.test.resize_size) * 5 // 4
    test_set = SyntheticMattingDataset(2, size, test_tf, False, cfg.general.random_seed)
    by_hand = []
    for i in range(len(test_set)):
        trimap = test_set[i]["trimap"][0].numpy().astype(np.float64)
        alpha = test_set[i]["alpha"][0].numpy().astype(np.float64)
        by_hand.append(compute_metrics(trimap, alpha, unit_to_trimap(trimap)).sad)
    scalars = _scalars(tmp_path / "tb")
    [(step, logged)] = scalars["val/sad_trimap"]
    assert step == 1
    assert logged == pytest.approx(float(np.mean(by_hand)), rel=1e-5)
    [(_, model_sad)] = scalars["val/sad"]
    assert best["best_metric"] == pytest.approx(model_sad, rel=1e-5)
    assert model_sad != pytest.approx(logged, rel=1e-6)  # the model's own SAD, not the baseline's again
    assert f"val sad {model_sad:.4f} (trimap {logged:.4f})" in err


def _write_foregrounds(root: Path, n_fg: int, n_bg: int) -> None:
    rng = np.random.default_rng(0)
    for folder in ("original", "mask", "trimap", "bg"):
        (root / folder).mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:48]
    alpha = np.clip((14 - np.hypot(yy - 24, xx - 24)) / 4, 0, 1)
    trimap = np.where(alpha >= 1, 255, np.where(alpha <= 0, 0, 128)).astype(np.uint8)
    for i in range(n_fg):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(root / "original" / f"f{i}.png")
        Image.fromarray((alpha * 255).astype(np.uint8)).save(root / "mask" / f"f{i}.png")
        Image.fromarray(trimap).save(root / "trimap" / f"f{i}.png")
    for i in range(n_bg):
        # One flat colour per background: the composite's background pixels say which one was drawn.
        Image.fromarray(np.full((40, 40, 3), 40 * (i + 1), np.uint8)).save(root / "bg" / f"b{i}.png")


def test_training_samples_get_new_backgrounds_each_epoch_seeded(tmp_path):
    _write_foregrounds(tmp_path, n_fg=2, n_bg=4)
    csv = prepare_labels(tmp_path, tmp_path / "bg", tmp_path / "labels.csv", test_fraction=0.0)
    rows = load_labels(csv)
    paired = {r["background"] for r in rows}
    assert len(paired) <= 2  # the CSV pairs each foreground with one background
    train_tf, _ = build_transforms(32, 32, [0.5] * 3, [0.5] * 3)
    # Without --bg the pool is what the CSV names; with it, every background in the folder.
    assert MattingDataset(rows, train_tf, True, seed=5).backgrounds == sorted(paired)
    ds = MattingDataset(rows, train_tf, True, seed=5, repeat=3, backgrounds=find_backgrounds(tmp_path / "bg"))
    assert len(ds) == 6
    drawn = {ds.background_of(i, epoch) for i in range(len(ds)) for epoch in range(6)}
    assert drawn == {str(p) for p in sorted((tmp_path / "bg").iterdir())}  # all four, not the CSV's pairing
    assert [ds.background_of(0, e) for e in range(6)] == [ds.background_of(0, e) for e in range(6)]

    def bg_level(sample) -> float:
        outside = sample["alpha"][0] == 0
        return round(float(sample["bg"][0][outside].mean()) * 255)

    for epoch in range(3):
        ds.set_epoch(epoch)
        a, b = ds[1], ds[1]
        assert torch.equal(a["image"], b["image"])  # seeded: the same sample twice in an epoch
        expected = int(Path(ds.background_of(1, epoch)).stem[1:])
        assert bg_level(a) == 40 * (expected + 1)
    # The test split keeps the CSV's pairing: a fixed validation set.
    test = MattingDataset(rows, train_tf, False, seed=5)
    assert test.background_of(0, 3) == rows[0]["background"]


def test_conversions_are_said_once_at_training_start(tmp_path, capsys):
    """One line per kind and role, in the mode each file is read in: alphas and trimaps as grayscale,
    the rest as RGB; a 16-bit alpha is read as float, so it is no conversion."""
    from alphagan_matting.train_pipeline.trainer import RunOptions, build_datasets

    _write_foregrounds(tmp_path, n_fg=3, n_bg=2)
    colour = np.asarray(Image.open(tmp_path / "original" / "f0.png"))
    Image.fromarray(colour[..., 0]).save(tmp_path / "original" / "f0.png")  # grayscale foreground
    alpha = np.asarray(Image.open(tmp_path / "mask" / "f1.png"))
    Image.fromarray(np.dstack([alpha] * 4)).save(tmp_path / "mask" / "f1.png")  # RGBA alpha
    Image.fromarray(alpha.astype(np.uint16) * 257).save(tmp_path / "mask" / "f0.png")  # 16-bit alpha
    trimap = np.asarray(Image.open(tmp_path / "trimap" / "f2.png"))
    Image.fromarray(np.dstack([trimap] * 3)).save(tmp_path / "trimap" / "f2.png")  # RGB trimap (test split)
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(tmp_path / "bg" / "b1.png")  # grayscale background
    csv = tmp_path / "labels.csv"
    csv.write_text("original,trimap,mask,background,split\n" + "".join(
        f"original/f{i}.png,trimap/f{i}.png,mask/f{i}.png,bg/b{i % 2}.png,{'test' if i == 2 else 'train'}\n"
        for i in range(3)))
    build_datasets(load_config("configs/quick_test.yaml"), RunOptions(csv=csv))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: foregrounds: grayscale images read as RGB: 1 of 3 (first: {tmp_path / 'original' / 'f0.png'})",
        f"note: alphas: colour images read as grayscale: 1 of 3 (first: {tmp_path / 'mask' / 'f1.png'})",
        f"note: alphas: alpha channel dropped: 1 of 3 (first: {tmp_path / 'mask' / 'f1.png'})",
        f"note: trimaps: colour images read as grayscale: 1 of 1 (first: {tmp_path / 'trimap' / 'f2.png'})",
        f"note: backgrounds: grayscale images read as RGB: 1 of 2 (first: {tmp_path / 'bg' / 'b1.png'})",
    ]


def test_repeat_must_be_positive(tmp_path):
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="--repeat must be >= 1"):
        main(["--config", "configs/quick_test.yaml", "--synthetic", "--repeat", "0",
              "--checkpoints-dir", str(tmp_path / "ck")])


def test_imagenet_resnet50_from_hub_cache(tmp_path, monkeypatch):
    """A (random) torchvision ResNet-50 saved under its hub file name is the encoder's starting point."""
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    generator = build_generator(ModelCfg())
    message = load_pretrained_encoder(generator, None)
    assert "random initialisation" in message and str(tmp_path / "hub" / "checkpoints") in message

    torch.manual_seed(123)
    reference = torchvision.models.resnet50(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference, tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    message = load_pretrained_encoder(generator, None)
    assert "resnet50-0676ba61.pth" in message and "loaded" in message
    own = generator.state_dict()
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        keys = [k for k in reference if k.startswith(stage + ".")]
        assert keys
        for key in keys:
            assert torch.equal(own[key], reference[key]), key
    assert torch.equal(own["conv1.0.weight"][:, :3], reference["conv1.weight"])
    assert torch.count_nonzero(own["conv1.0.weight"][:, 3]) == 0  # the trimap channel starts silent
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(own[f"conv1.1.{name}"], reference[f"bn1.{name}"])

    # A narrowed generator cannot take these weights: random init, said once, no error.
    tiny = build_generator(ModelCfg(base_width=8, layers=[1, 1, 1, 1], aspp_channels=16, disc_width=8))
    assert "random initialisation" in load_pretrained_encoder(tiny, None)

    # Another network's weights under torchvision's file name would leave most of the encoder random.
    torch.save(torchvision.models.resnet18(weights=None).state_dict(),
               tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    with pytest.raises(DataError, match=r"resnet50-0676ba61\.pth: not ImageNet ResNet-50 weights \(\d+ encoder"):
        load_pretrained_encoder(generator, None)
