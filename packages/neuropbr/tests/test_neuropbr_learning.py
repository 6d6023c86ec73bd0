"""Real-material recipe: crops with consistent normals, the split by material, the mean-maps baseline
logged at validation, and a budget stop that leaves a best model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neuropbr import train as train_mod
from neuropbr.maps import decode_normal, maps_for_display
from neuropbr.utils.dataset import PBRDataset, train_val_split
from neuropbr.utils.make_dataset import random_crop, scale_relief, write_dataset_from_materials
from neuropbr.utils.synthetic import make_material
from shared.checkpoint import load_checkpoint
from shared.errors import DataError
from shared.images import read_image, save_image, to_tensor

TINY_REAL_CONFIG = """
from train_config import get_quick_test_config


def get_config():
    cfg = get_quick_test_config()
    cfg.model.encoder_type = "unet"
    cfg.model.encoder_channels = [8, 16, 32, 64]
    cfg.model.transformer_dim = 32
    cfg.model.transformer_num_heads = 4
    cfg.model.transformer_depth = 1
    cfg.model.decoder_channels = [32, 16, 16, 16]
    cfg.model.use_gan = False
    cfg.loss.w_gan = 0.0
    cfg.data.image_size = 16
    cfg.data.num_workers = 0
    cfg.data.val_ratio = 0.34
    cfg.training.epochs = 3
    cfg.training.save_every_n_epochs = 0
    return cfg
"""


def write_materials(folder: Path, count: int, size: int = 32) -> list[Path]:
    """``count`` procedural materials written as real material folders (the four map PNGs)."""
    dirs = []
    for i in range(count):
        maps = maps_for_display(make_material(i, size, seed=5))
        d = folder / f"mat_{i}"
        for key, value in maps.items():
            save_image(d / f"{key}.png", value)
        dirs.append(d)
    return dirs


def test_crops_flip_the_normals_with_the_maps():
    # Albedo red rises to the right and green to the top; the normal leans right and up. A crop flipped
    # left-right must lean left (red then falls to the right), one flipped up-down must lean down.
    size = 64
    xs = torch.linspace(0, 1, size)
    albedo = torch.stack([xs.expand(size, size), xs.flip(0)[:, None].expand(size, size), torch.zeros(size, size)])
    normal = torch.tensor([0.36, 0.48, 0.8])[:, None, None].expand(3, size, size)  # unit length
    maps = {"albedo": albedo, "roughness": torch.full((1, size, size), 0.5), "metallic": torch.zeros(1, size, size),
            "normal": normal.clone()}
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(16):
        crop = random_crop(maps, 16, gen)
        assert crop["albedo"].shape == (3, 16, 16) and crop["normal"].shape == (3, 16, 16)
        rising_x = bool(crop["albedo"][0, 8, -1] > crop["albedo"][0, 8, 0])
        rising_up = bool(crop["albedo"][1, 0, 8] > crop["albedo"][1, -1, 8])
        n = crop["normal"][:, 8, 8]
        expected = torch.tensor([0.36 if rising_x else -0.36, 0.48 if rising_up else -0.48, 0.8])
        assert torch.allclose(n, expected, atol=1e-3), (rising_x, rising_up, n)
        seen.add((rising_x, rising_up))
    assert len(seen) == 4


def test_validation_holds_no_training_material(tmp_path: Path):
    dirs = write_materials(tmp_path / "materials", 3)
    meta = write_dataset_from_materials(dirs, tmp_path / "data", size=16, dirty=False, crops=3)
    assert len(meta) == 12 and meta["sample_0001"] == {"material_name": "mat_0__c000", "group": "mat_0"}
    ds = PBRDataset(tmp_path / "data" / "input", tmp_path / "data" / "output", image_size=16)
    assert ds.group_keys == [f"mat_{i}" for i in range(3) for _ in range(4)]
    for seed in range(5):
        train, val = train_val_split(ds.group_keys, 0.34, seed)
        train_groups, val_groups = {ds.group_keys[i] for i in train}, {ds.group_keys[i] for i in val}
        assert len(val) == 4 and len(val_groups) == 1 and not train_groups & val_groups
        # Crops are their own target folders: no target folder of a validation item is a training one's.
        assert not {ds.entries[i][2] for i in train} & {ds.entries[i][2] for i in val}


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    dirs = write_materials(tmp_path / "materials", 3)
    write_dataset_from_materials(dirs, tmp_path / "data", size=16, dirty=False, crops=3)
    return tmp_path / "data"


def _scalars(log_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for events_file in log_dir.rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(events_file.parent), size_guidance={"scalars": 0}).Reload()
        if tag in events.Tags().get("scalars", []):
            found.update({e.step: e.value for e in events.Scalars(tag)})
    return found


def test_budget_stop_validates_against_mean_maps_and_keeps_best(rendered: Path, tmp_path: Path, capsys):
    config = tmp_path / "tiny_real.py"
    config.write_text(TINY_REAL_CONFIG)
    ckpt = tmp_path / "ckpt"
    # 8 training items in batches of 2: a one-step budget stops inside the first epoch, before any
    # end-of-epoch validation, so best_model.pth can only come from the validation at the stop.
    assert train_mod.main(["--config", str(config), "--input-dir", str(rendered / "input"), "--output-dir",
                           str(rendered / "output"), "--checkpoint-dir", str(ckpt), "--device", "cpu",
                           "--batch-size", "2", "--seed", "3", "--tracker", "tensorboard", "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "(mean_maps " in out and "flat_normal " in out and "Saved best model:" in out
    best = load_checkpoint(ckpt / "best_model.pth")
    assert best["global_step"] == 1 and best["best_metric"] is not None

    # By hand from the PNGs: each channel's mean over the training items' maps, as a constant guess for
    # every validation item; PSNR per item, averaged. The flat normal's angle is acos(n_z).
    meta = json.loads((rendered / "input" / "render_metadata.json").read_text())
    names = [meta[s] if isinstance(meta[s], str) else meta[s]["material_name"] for s in sorted(meta)]
    groups = [n.split("__")[0] for n in names]
    train, val = train_val_split(groups, 0.34, 3)
    logged = {}
    for key in ("albedo", "roughness"):
        train_maps = [_png(rendered / "output" / names[i] / f"{key}.png") for i in train]
        guess = np.mean([m.reshape(-1, m.shape[-1] if m.ndim == 3 else 1).mean(axis=0) for m in train_maps], axis=0)
        psnrs = []
        for i in val:
            target = _png(rendered / "output" / names[i] / f"{key}.png")
            target = target.reshape(-1, target.shape[-1] if target.ndim == 3 else 1)
            psnrs.append(10 * np.log10(1.0 / np.mean((target - guess) ** 2)))
        logged[key] = float(np.mean(psnrs))
    angles = []
    for i in val:
        n = _png(rendered / "output" / names[i] / "normal.png") * 2 - 1
        angles.append(np.degrees(np.arccos(np.clip(n[..., 2] / np.linalg.norm(n, axis=-1), -1, 1))).ravel())
    flat = float(np.concatenate(angles).mean())

    logs = ckpt / "logs"
    assert _scalars(logs, "val/psnr_albedo_mean_maps")[1] == pytest.approx(logged["albedo"], abs=1e-3)
    assert _scalars(logs, "val/psnr_roughness_mean_maps")[1] == pytest.approx(logged["roughness"], abs=1e-3)
    assert _scalars(logs, "val/normal_angle_mean_flat_normal")[1] == pytest.approx(flat, abs=1e-2)
    assert 1 in _scalars(logs, "val/psnr_albedo")


def test_scale_relief_scales_the_slopes_of_the_height_field():
    normal = torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1)  # slope 0.75 along x
    steeper = scale_relief(normal, 2.0).flatten()
    torch.testing.assert_close(steeper, torch.tensor([1.2, 0.0, 0.8]) / (1.2**2 + 0.8**2) ** 0.5)
    assert float(steeper[0] / steeper[2]) == pytest.approx(1.5)  # the slope doubled
    flat = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    torch.testing.assert_close(scale_relief(flat, 3.0), flat)  # a flat surface stays flat
    torch.testing.assert_close(scale_relief(normal, 1.0), normal)


def test_relief_makes_crops_steeper_and_leaves_the_whole_material_as_it_is(tmp_path):
    materials = write_materials(tmp_path / "mat", 2)[1:]  # mat_1: a bumpy procedural material
    plain = write_dataset_from_materials(materials, tmp_path / "plain", 16, dirty=False, seed=0, crops=3)
    steep = write_dataset_from_materials(materials, tmp_path / "steep", 16, dirty=False, seed=0, crops=3,
                                         relief=(3.0, 3.0))
    assert plain == steep == json.loads((tmp_path / "steep" / "input" / "render_metadata.json").read_text())

    def angle(root, name):
        normal = decode_normal(to_tensor(read_image(root / "output" / name / "normal.png")))
        return float(torch.rad2deg(torch.acos(normal[2].clamp(-1, 1))).mean())

    assert angle(tmp_path / "steep", "mat_1") == pytest.approx(angle(tmp_path / "plain", "mat_1"))
    for c in range(3):
        crop = f"mat_1__c{c:03d}"
        assert angle(tmp_path / "steep", crop) > 2.0 * angle(tmp_path / "plain", crop)
        # The views are rendered from the steeper normals: the shading changes, not only the target.
        view = f"input/clean/sample_{c + 1:04d}/0.png"
        assert np.abs(read_image(tmp_path / "steep" / view, dtype="float32")
                      - read_image(tmp_path / "plain" / view, dtype="float32")).mean() > 1e-3
    with pytest.raises(DataError, match="relief range"):
        write_dataset_from_materials(materials, tmp_path / "bad", 16, crops=1, relief=(2.0, 1.0))
