"""Training on real faces: known pixels stay exact and the hole L1 falls over a short overfit run."""

from pathlib import Path

import pytest
import torch

from gansformer_inpaint.config import Config
from gansformer_inpaint.training.losses import masked_l1
from gansformer_inpaint.training.trainer import Trainer

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "inpainting"
needs_data = pytest.mark.skipif(not (DATA / "ground_truth").is_dir(),
                                reason=f"real sample data not found at {DATA} (it sits beside the repository)")

torch.set_num_threads(1)


def tiny_config(tmp_path, **kw):
    base = dict(img_size=32, base_channels=8, d_channels=8, latent_num=4, latent_dim=32, num_heads=4,
                batch_size=4, workers=0, device="cpu", checkpoint_dir=str(tmp_path / "run"), log_interval=1,
                save_interval=1000, num_epochs=1)
    base.update(kw)
    return Config(**base)


@needs_data
def test_overfit_real_faces_hole_l1_falls_and_known_pixels_exact(tmp_path):
    cfg = tiny_config(tmp_path, data_root=str(DATA))
    trainer = Trainer(cfg)
    trainer.dataset.items = trainer.dataset.items[:4]  # one fixed batch of 4 real faces
    batch = {k: torch.stack([trainer.dataset[i][k] for i in range(4)]) for k in ("masked", "gt", "mask")}

    def hole_l1():
        with torch.no_grad():
            raw, composed = trainer.gen_module(batch["masked"], batch["mask"])
        return masked_l1(raw, batch["gt"], batch["mask"]).item(), composed

    start, _ = hole_l1()
    history = []
    for _ in range(60):
        trainer.train_step(batch)
        trainer.global_step += 1
        history.append(hole_l1()[0])
    end, composed = hole_l1()
    assert end < 0.6 * start, (start, history)
    assert sum(history[-10:]) / 10 < sum(history[:10]) / 10
    keep = batch["mask"].expand_as(composed) == 0
    assert torch.equal(composed[keep], batch["masked"][keep])
    # ... and the known region of the masked input is the ground truth itself.
    assert torch.allclose(batch["masked"][keep], batch["gt"][keep], atol=1e-6)


def test_fit_on_synthetic_writes_everything(tmp_path):
    cfg = tiny_config(tmp_path, synthetic=True, synthetic_size=4, batch_size=2, num_epochs=1, save_interval=1)
    summary = Trainer(cfg).fit()
    run = tmp_path / "run"
    for name in ("latest.pth", "best.pth", "checkpoint_1.pt", "checkpoint_2.pt", "metrics.jsonl",
                 "loss_curve.png", "samples/epoch_0001.png"):
        assert (run / name).is_file(), name
    assert {"g_loss", "d_loss", "r1", "hole_l1", "valid_l1", "fixed_hole_l1"} <= set(summary)


def test_conversions_are_said_once_per_training_inference_and_evaluation(tmp_path, capsys):
    """Images read as RGB, masks as grayscale: one line per kind and role, naming the count and first file."""
    import numpy as np
    from PIL import Image

    from gansformer_inpaint.evaluation import run_evaluation
    from gansformer_inpaint.inference import run_inference

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:20] = 255
    for name in ("a", "b"):
        rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        for sub, array in (("extracted", rgb), ("ground_truth", rgb), ("mask", mask)):
            (data / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(data / sub / f"{name}.png")
    Image.open(data / "ground_truth" / "a.png").convert("RGBA").save(data / "ground_truth" / "a.png")
    Image.open(data / "extracted" / "b.png").convert("L").save(data / "extracted" / "b.png")
    Image.fromarray(np.dstack([mask] * 3)).save(data / "mask" / "a.png")  # a colour mask
    grey = f"note: images: grayscale images read as RGB: 1 of {{}} (first: {data / 'extracted' / 'b.png'})"
    colour_mask = f"note: masks: colour images read as grayscale: 1 of 2 (first: {data / 'mask' / 'a.png'})"
    every_file = [f"note: images: alpha channel dropped: 1 of 4 (first: {data / 'ground_truth' / 'a.png'})",
                  grey.format(4), colour_mask]

    def notes() -> list[str]:
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]

    # Validation reads the same pairs again (no --val-root): still one line per kind, each file counted once.
    trainer = Trainer(tiny_config(tmp_path, data_root=str(data)))
    assert notes() == every_file
    trainer.save_step_checkpoint()
    checkpoint = str(tmp_path / "run" / "checkpoint_0.pt")
    run_inference(checkpoint, str(data / "extracted"), str(data / "mask"), str(tmp_path / "out"), device="cpu")
    assert notes() == [grey.format(2), colour_mask]
    run_evaluation(checkpoint, str(data), output=str(tmp_path / "metrics.json"), device="cpu")
    assert notes() == every_file
