"""Synthetic materials, the renderer, PBRDataset's layout, curriculum, split and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuropbr.maps import tensor_to_maps
from neuropbr.utils.dataset import (
    MetadataNotFoundError,
    PBRDataset,
    SampleNotInMetadataError,
    train_val_split,
)
from neuropbr.utils.make_dataset import write_synthetic_dataset
from neuropbr.utils.render import DEFAULT_SETUPS, render_views
from neuropbr.utils.synthetic import SyntheticPBRDataset, make_material, make_sample
from shared.errors import DataError

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def test_synthetic_is_deterministic_and_in_range():
    a_views, a_maps = make_sample(3, 32, seed=5)
    b_views, b_maps = make_sample(3, 32, seed=5)
    assert torch.equal(a_views, b_views)
    assert all(torch.equal(a_maps[k], b_maps[k]) for k in a_maps)
    c_views, _ = make_sample(4, 32, seed=5)
    assert not torch.equal(a_views, c_views)
    assert a_views.shape == (3, 3, 32, 32)
    assert float(a_views.min()) >= 0 and float(a_views.max()) <= 1
    assert torch.allclose(a_maps["normal"].norm(dim=0), torch.ones(32, 32), atol=1e-5)
    ds = SyntheticPBRDataset(num_samples=4, image_size=32, seed=5, curriculum_mode=1, output_size=64)
    assert len(ds) == 8 and ds.sample_key(5) == "dirty/sample_0001"
    x, y = ds[0]
    assert x.shape == (3, 3, 32, 32) and y.shape == (8, 64, 64)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0  # normalised with mean = std = 0.5


def test_renderer_shading_depends_on_every_map():
    maps = make_material(0, 32, seed=1)
    base = render_views(maps, DEFAULT_SETUPS)
    for key, change in (("albedo", lambda t: t * 0.5), ("roughness", lambda t: (t + 0.4).clamp(0, 1)),
                        ("metallic", lambda t: 1 - t),
                        ("normal", lambda t: torch.nn.functional.normalize(t + torch.tensor([0.5, 0, 0]).view(3, 1, 1), dim=0))):
        changed = dict(maps)
        changed[key] = change(maps[key])
        assert (render_views(changed, DEFAULT_SETUPS) - base).abs().mean() > 1e-3, key
    # Flat white Lambertian-ish surface: the view lit from above-left is brighter in its upper-left corner.
    flat = {"albedo": torch.full((3, 32, 32), 0.8), "roughness": torch.ones(1, 32, 32),
            "metallic": torch.zeros(1, 32, 32), "normal": torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 32, 32)}
    v0 = render_views(flat)[0].mean(dim=0)
    assert v0[:8, :8].mean() > v0[-8:, -8:].mean()


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    write_synthetic_dataset(tmp_path, num_samples=4, size=32, dirty=True, seed=0)
    return tmp_path


def test_pbr_dataset_layout_and_curriculum(dataset_root: Path):
    inp, out = dataset_root / "input", dataset_root / "output"
    shutil.rmtree(inp / "dirty" / "sample_0003")  # dirty pool smaller than clean
    counts = {m: len(PBRDataset(inp, out, image_size=32, curriculum_mode=m)) for m in (0, 1, 2)}
    assert counts == {0: 4, 1: 7, 2: 3}
    assert len(PBRDataset(inp, out, image_size=32, use_dirty=True)) == 3  # legacy flag = curriculum 2
    ds = PBRDataset(inp, out, image_size=32, curriculum_mode=1)
    x, y = ds[0]
    assert x.shape == (3, 3, 32, 32) and y.shape == (8, 32, 32)
    maps = tensor_to_maps(y)
    assert torch.allclose(maps["normal"].norm(dim=0), torch.ones(32, 32), atol=1e-4)
    assert float(maps["albedo"].min()) >= 0 and float(maps["albedo"].max()) <= 1
    # Native size kept by default only when it matches; another image_size resizes inputs and targets.
    x16, y16 = PBRDataset(inp, out, image_size=16)[0]
    assert x16.shape == (3, 3, 16, 16) and y16.shape == (8, 16, 16)
    assert PBRDataset(inp, out, image_size=None)[0][0].shape == (3, 3, 32, 32)


def test_split_is_deterministic_and_keeps_samples_together(dataset_root: Path):
    ds = PBRDataset(dataset_root / "input", dataset_root / "output", image_size=32, curriculum_mode=1)
    train, val = train_val_split(ds.group_keys, 0.25, seed=42)
    assert train_val_split(ds.group_keys, 0.25, seed=42) == (train, val)
    assert sorted(train + val) == list(range(len(ds)))
    assert len({ds.group_keys[i] for i in val}) == 1
    assert not {ds.group_keys[i] for i in val} & {ds.group_keys[i] for i in train}


def test_common_issues_errors(dataset_root: Path):
    inp, out = dataset_root / "input", dataset_root / "output"
    meta_path = inp / "render_metadata.json"
    meta = json.loads(meta_path.read_text())

    meta_path.unlink()
    with pytest.raises(FileNotFoundError, match="render_metadata.json"):
        PBRDataset(inp, out, image_size=32)
    assert issubclass(MetadataNotFoundError, DataError)

    del meta["sample_0002"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(KeyError) as info:
        PBRDataset(inp, out, image_size=32)
    assert isinstance(info.value, SampleNotInMetadataError) and "sample_0002" in str(info.value)

    meta_path.write_text("{not json")
    with pytest.raises(DataError, match="malformed JSON"):
        PBRDataset(inp, out, image_size=32)

    meta_path.write_text(json.dumps({f"sample_{i:04d}": f"material_{i:04d}" for i in range(4)}))
    shutil.rmtree(inp / "clean")
    with pytest.raises(DataError, match="No samples found"):
        PBRDataset(inp, out, image_size=32, curriculum_mode=0)
    with pytest.raises(DataError, match="folder not found"):
        PBRDataset(inp / "nope", out)


def test_truncated_view_names_the_file(dataset_root: Path):
    view = dataset_root / "input" / "clean" / "sample_0001" / "1.png"
    view.write_bytes(view.read_bytes()[:60])
    ds = PBRDataset(dataset_root / "input", dataset_root / "output", image_size=32)
    with pytest.raises(DataError, match="1.png"):
        ds[1]


def test_spec_verification_snippet_runs_from_package_folder(dataset_root: Path):
    snippet = f"""
from utils.dataset import PBRDataset
from train_config import get_default_config
cfg = get_default_config()
ds = PBRDataset(
    input_dir='{dataset_root}/input',
    output_dir='{dataset_root}/output',
    metadata_path='{dataset_root}/input/render_metadata.json',
    transform_mean=cfg.transform.mean,
    transform_std=cfg.transform.std,
    image_size=32,
  use_dirty=cfg.data.use_dirty_renders,
  curriculum_mode=cfg.data.render_curriculum
)
print('Total samples:', len(ds))
inputs, targets = ds[0]
print('Input shape:', inputs.shape)
print('Target shape:', targets.shape)
"""
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Total samples: 4" in proc.stdout
    assert "Input shape: torch.Size([3, 3, 32, 32])" in proc.stdout
    assert "Target shape: torch.Size([8, 32, 32])" in proc.stdout
