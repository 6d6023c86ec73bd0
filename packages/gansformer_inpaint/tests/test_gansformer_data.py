"""Dataset pairing, mask derivation, synthetic data, and every bad input's one-line error."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansformer_inpaint.dataloader import (
    InpaintingDataset,
    SyntheticInpaintingDataset,
    derive_mask,
    random_mask,
)
from shared.errors import DataError
from shared.images import read_image

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "inpainting"
needs_data = pytest.mark.skipif(not (DATA / "ground_truth").is_dir(),
                                reason=f"real sample data not found at {DATA} (it sits beside the repository)")


def make_dataset(root: Path, n=3, size=32, with_mask=True, ext=".png"):
    rng = np.random.default_rng(0)
    for sub in ("extracted", "ground_truth", "mask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        gt = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4 : size // 2, size // 4 : 3 * size // 4] = 255
        masked = gt.copy()
        masked[mask > 0] = 255
        Image.fromarray(gt).save(root / "ground_truth" / f"img{i}{ext}")
        Image.fromarray(masked).save(root / "extracted" / f"img{i}{ext}")
        if with_mask:
            Image.fromarray(mask).save(root / "mask" / f"img{i}.png")
    if not with_mask:
        (root / "mask").rmdir()
    return root


def test_pairs_load_resized_with_mask(tmp_path):
    ds = InpaintingDataset(make_dataset(tmp_path, size=40), img_size=32)
    item = ds[0]
    assert item["masked"].shape == item["gt"].shape == (3, 32, 32)
    assert item["mask"].shape == (1, 32, 32)
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["gt"].min() >= -1 and item["gt"].max() <= 1


def test_mask_derived_when_no_mask_folder(tmp_path):
    ds = InpaintingDataset(make_dataset(tmp_path, with_mask=False), img_size=32)
    mask = ds[0]["mask"][0]
    expected = torch.zeros(32, 32)
    expected[8:16, 8:24] = 1
    # Random ground-truth pixels can be white by chance; the cleanup closes those pin-holes.
    assert (mask == expected).float().mean() > 0.97


def test_derive_mask_removes_specks_and_fills_pinholes():
    clean = np.full((32, 32, 3), 100, np.uint8)
    masked = clean.copy()
    masked[8:20, 8:20] = 255
    masked[12, 12] = 100  # pin-hole: hole colour equals the face there
    masked[28, 28] = 140  # isolated speck outside the hole (compression noise)
    mask = derive_mask(masked, clean, threshold=24)
    assert mask[12, 12] == 1 and mask[28, 28] == 0
    assert mask[8:20, 8:20].all() and mask.sum() == 144


@needs_data
def test_real_data_loads_and_derived_mask_matches_given_mask():
    ds = InpaintingDataset(DATA, img_size=64)
    assert len(ds) >= 10
    masked_path, gt_path, mask_path = ds.items[0]
    assert mask_path is not None
    derived = derive_mask(read_image(masked_path), read_image(gt_path)).astype(bool)
    given = read_image(mask_path, mode="L") >= 128
    assert (derived == given).mean() > 0.97
    assert (given & ~derived).mean() < 0.005  # a derived mask may be larger, hardly ever smaller


def test_synthetic_is_deterministic_and_masks_change_per_epoch():
    ds = SyntheticInpaintingDataset(size=4, img_size=32, seed=1)
    a, b = ds[2], ds[2]
    assert torch.equal(a["gt"], b["gt"]) and torch.equal(a["mask"], b["mask"])
    ds.epoch = 1
    c = ds[2]
    assert torch.equal(a["gt"], c["gt"]) and not torch.equal(a["mask"], c["mask"])
    hole = a["mask"].expand_as(a["masked"]) > 0
    assert torch.all(a["masked"][hole] == 1)  # white hole, as extracted/ files


def test_random_mask_coverage():
    fractions = [random_mask(64, np.random.default_rng(i)).mean() for i in range(20)]
    assert all(0 < f <= 0.75 for f in fractions)


def test_unpaired_names(tmp_path):
    root = make_dataset(tmp_path)
    (root / "ground_truth" / "img1.png").rename(root / "ground_truth" / "other.png")
    with pytest.raises(DataError, match="no matching file"):
        InpaintingDataset(root, 32)


def test_unsupported_format(tmp_path):
    root = make_dataset(tmp_path)
    (root / "extracted" / "notes.txt").write_text("not an image: ignored")
    assert len(InpaintingDataset(root, 32)) == 3
    Image.new("RGB", (32, 32)).save(root / "extracted" / "img9.gif")
    with pytest.raises(DataError, match=r"img9\.gif: unsupported image format"):
        InpaintingDataset(root, 32)


def test_pair_of_different_sizes(tmp_path):
    root = make_dataset(tmp_path)
    Image.new("RGB", (48, 32)).save(root / "ground_truth" / "img0.png")
    with pytest.raises(DataError, match=r"img0\.png: size 32x32 differs from its ground truth"):
        InpaintingDataset(root, 32)


def test_mask_of_different_size(tmp_path):
    root = make_dataset(tmp_path)
    Image.new("L", (16, 16)).save(root / "mask" / "img2.png")
    with pytest.raises(DataError, match=r"mask size 16x16 differs"):
        InpaintingDataset(root, 32)


def test_too_small_image(tmp_path):
    root = make_dataset(tmp_path, size=8)
    with pytest.raises(DataError, match="too small"):
        InpaintingDataset(root, 32)


def test_missing_folders(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        InpaintingDataset(tmp_path / "nope", 32)
    (tmp_path / "extracted").mkdir()
    with pytest.raises(DataError, match="ground_truth: folder not found"):
        InpaintingDataset(tmp_path, 32)


def test_truncated_image_is_reported(tmp_path):
    root = make_dataset(tmp_path)
    path = root / "extracted" / "img0.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"img0\.png"):
        InpaintingDataset(root, 32)[0]
