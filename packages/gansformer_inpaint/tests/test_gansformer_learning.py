"""What makes a short run learn on real data: random holes, validation beside the mean fill, best on validation,
R1 outside the clipping."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansformer_inpaint.cli import config_from_args, train_entry, train_parser
from gansformer_inpaint.dataloader.loader import InpaintingDataset, load_pair
from gansformer_inpaint.evaluation import mean_fill

torch.set_num_threads(1)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "inpainting"
needs_data = pytest.mark.skipif(not (DATA / "ground_truth").is_dir(),
                                reason=f"real sample data not found at {DATA} (it sits beside the repository)")
SMALL = ["--batch-size", "2", "--img-size", "32", "--base-channels", "8", "--d-channels", "8", "--latent-dim", "32",
         "--latent-num", "4", "--num-heads", "4", "--workers", "0", "--device", "cpu", "--log-interval", "1",
         "--deterministic", "--no-wandb"]


def test_mean_fill_puts_the_known_pixels_mean_colour_in_the_hole():
    image = torch.zeros(3, 2, 2)
    image[:, 0, 0] = torch.tensor([0.2, 0.4, 0.6])
    image[:, 0, 1] = torch.tensor([0.4, 0.6, 0.8])
    image[:, 1, :] = 1.0  # the hole's own (fill) colour must not count
    mask = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    out = mean_fill(image, mask)
    assert torch.equal(out[:, 0], image[:, 0])
    assert torch.allclose(out[:, 1], torch.tensor([0.3, 0.5, 0.7])[:, None].expand(3, 2))


def _folder(root: Path, count: int = 3, size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("extracted", "ground_truth", "mask"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        gt = rng.integers(0, 200, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[8:20, 10:30] = 255
        extracted = gt.copy()
        extracted[mask > 0] = 255
        Image.fromarray(gt).save(root / "ground_truth" / f"p{i}.png")
        Image.fromarray(extracted).save(root / "extracted" / f"p{i}.png")
        Image.fromarray(mask).save(root / "mask" / f"p{i}.png")
    return root


def test_random_holes_are_seeded_by_sample_and_epoch_and_keep_known_pixels(tmp_path):
    ds = InpaintingDataset(_folder(tmp_path), img_size=48, random_mask_prob=1.0, seed=3)
    own = InpaintingDataset(tmp_path, img_size=48)[0]["mask"]
    first = ds[0]
    assert not torch.equal(first["mask"], own)
    assert torch.equal(ds[0]["mask"], first["mask"])  # same (seed, epoch, index): same hole, in any worker
    assert not torch.equal(ds[1]["mask"], first["mask"])
    ds.epoch = 1
    assert not torch.equal(ds[0]["mask"], first["mask"])
    hole = first["mask"].bool().expand(3, -1, -1)
    assert torch.equal(first["masked"][~hole], first["gt"][~hole])
    assert bool((first["masked"][hole] == 1).all())
    # Without augmentation the dataset's own holes, unflipped.
    plain = InpaintingDataset(tmp_path, img_size=48)
    assert torch.equal(plain[0]["mask"], own)


def test_flips_move_image_and_hole_together(tmp_path):
    ds = InpaintingDataset(_folder(tmp_path, count=1), img_size=48, flip=True, seed=0)
    plain = InpaintingDataset(tmp_path, img_size=48)[0]
    flipped = False
    for epoch in range(8):
        ds.epoch = epoch
        item = ds[0]
        if not torch.equal(item["gt"], plain["gt"]):
            flipped = True
            for key in ("masked", "gt", "mask"):
                assert torch.equal(item[key], plain[key].flip(-1))
    assert flipped


def test_r1_step_is_not_clipped(tmp_path, monkeypatch):
    from gansformer_inpaint.training.trainer import Trainer

    args = train_parser().parse_args(["--synthetic", "--synthetic-size", "2", *SMALL, "--checkpoint-dir",
                                      str(tmp_path / "run"), "--max-grad-norm", "10"])
    trainer = Trainer(config_from_args(args))
    calls = []
    original = trainer.amp_d.backward_and_step

    def spy(loss, optimizer, *a, **kw):
        calls.append(kw.get("max_grad_norm"))
        return original(loss, optimizer, *a, **kw)

    monkeypatch.setattr(trainer.amp_d, "backward_and_step", spy)
    trainer.train_step(next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=2))))
    assert calls == [10.0, None]  # the D loss is clipped, the R1 step (global step 0) is not


@needs_data
def test_validation_logs_the_mean_fill_baseline_and_a_budget_stop_keeps_best(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val = tmp_path / "val"
    for sub in ("extracted", "ground_truth", "mask"):
        (val / sub).mkdir(parents=True)
        for name in ("celebahq_039913.png", "skimage_astronaut.png"):
            (val / sub / name).symlink_to(DATA / sub / name)
    run = tmp_path / "run"
    # Two pairs to train on too: loading all eleven 256 px pairs twice would double the test's time.
    train_entry(["--data-root", str(val), "--val-root", str(val), *SMALL, "--tracker", "tensorboard",
                 "--checkpoint-dir", str(run), "--epochs", "5", "--max-steps", "3",
                 "--batch-size", "1"])

    # The mean fill by hand: each pair at the model size, the hole the known pixels' mean, PSNR over the hole.
    expected = []
    for name in ("celebahq_039913", "skimage_astronaut"):
        item = load_pair(val / "extracted" / f"{name}.png", val / "ground_truth" / f"{name}.png",
                         val / "mask" / f"{name}.png", 32, 24)
        masked, gt = ((item["masked"] + 1) / 2).numpy(), ((item["gt"] + 1) / 2).numpy()
        hole = item["mask"][0].numpy() > 0
        colour = masked[:, ~hole].mean(axis=1)
        mse = ((gt[:, hole] - colour[:, None]) ** 2).mean(dtype=np.float64)
        expected.append(10 * np.log10(1 / mse))

    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)]
              for tag in ("val/psnr_hole", "val/psnr_hole_meanfill")}
    assert logged["val/psnr_hole_meanfill"][-1][1] == pytest.approx(np.mean(expected), abs=1e-3)
    # At the end of epoch 1 (two pairs, batch 1) and at the budget stop in the middle of epoch 2.
    assert [s for s, _ in logged["val/psnr_hole"]] == [2, 3]
    err = capsys.readouterr().err
    assert f"(meanfill {np.mean(expected):.2f})" in err

    best = torch.load(run / "best.pth", weights_only=True)
    assert best["best_metric"] == pytest.approx(max(v for _, v in logged["val/psnr_hole"]), abs=1e-4)
    assert best["global_step"] in {s for s, v in logged["val/psnr_hole"] if v == pytest.approx(best["best_metric"])}


def test_resume_with_random_holes_and_flips_is_exact(tmp_path):
    data = _folder(tmp_path / "data", count=3)
    common = ["--data-root", str(data), *SMALL, "--epochs", "2", "--random-mask-prob", "0.5", "--flip"]
    train_entry([*common, "--checkpoint-dir", str(tmp_path / "full")])
    train_entry([*common, "--checkpoint-dir", str(tmp_path / "split"), "--max-steps", "3"])
    train_entry([*common, "--checkpoint-dir", str(tmp_path / "split"), "--resume", "auto"])
    full = torch.load(tmp_path / "full" / "latest.pth", weights_only=True)
    split = torch.load(tmp_path / "split" / "latest.pth", weights_only=True)
    assert full["global_step"] == split["global_step"] == 4
    for part in ("generator", "discriminator"):
        for key, value in full["state"][part].items():
            assert torch.equal(value, split["state"][part][key]), f"{part}.{key} differs"
    assert (tmp_path / "split" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()
