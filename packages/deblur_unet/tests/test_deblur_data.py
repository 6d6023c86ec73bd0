"""Datasets: layouts, crops before batching, synchronised augmentation, synthetic pairs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblur_unet.data import (
    DeblurDataset,
    SyntheticDeblurDataset,
    augment,
    find_pairs,
    motion_kernel,
    split_pairs,
)
from shared.errors import DataError


def _write_pairs(folder: Path, names, size=(40, 32), same=False):
    rng = np.random.default_rng(0)
    for sub in ("blur", "sharp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        sharp = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        blur = sharp if same else rng.integers(0, 256, sharp.shape, dtype=np.uint8)
        Image.fromarray(blur).save(folder / "blur" / f"{name}.png")
        Image.fromarray(sharp).save(folder / "sharp" / f"{name}.png")


def test_flat_layout_pairs_by_name(tmp_path):
    _write_pairs(tmp_path, ["b", "a", "c"])
    pairs = find_pairs(tmp_path)
    assert [p[0].name for p in pairs] == ["a.png", "b.png", "c.png"]
    assert all(b.name == s.name for b, s in pairs)


def test_gopro_layout_train_and_test(tmp_path):
    _write_pairs(tmp_path / "train" / "GOPR0001_00", ["000001", "000002"])
    _write_pairs(tmp_path / "train" / "GOPR0002_00", ["000001"])
    _write_pairs(tmp_path / "test" / "GOPR0003_00", ["000001"])
    train, val = split_pairs(tmp_path, 0.5, seed=0)
    assert len(train) == 3 and len(val) == 1
    assert val[0][0].parent.parent.name == "GOPR0003_00"


def test_flat_split_holds_out_a_seeded_fraction(tmp_path):
    _write_pairs(tmp_path, [f"{i:02d}" for i in range(10)])
    train, val = split_pairs(tmp_path, 0.2, seed=3)
    assert len(train) == 8 and len(val) == 2
    assert split_pairs(tmp_path, 0.2, seed=3) == (train, val)
    assert not set(train) & set(val)


def test_unpaired_file_is_an_error_naming_it(tmp_path):
    _write_pairs(tmp_path, ["a", "b"])
    (tmp_path / "sharp" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png"):
        find_pairs(tmp_path)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        find_pairs(tmp_path / "nope")
    with pytest.raises(DataError, match="blur/ and sharp/"):
        find_pairs(tmp_path)
    (tmp_path / "blur").mkdir()
    (tmp_path / "sharp").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_pairs(tmp_path)


def test_training_items_are_patches_in_model_range(tmp_path):
    _write_pairs(tmp_path, ["a", "b"], size=(50, 40))
    ds = DeblurDataset.from_folder(tmp_path, patch_size=16, training=True)
    blur, sharp = ds[0]
    assert blur.shape == sharp.shape == (3, 16, 16)
    assert blur.dtype == torch.float32 and blur.min() >= -1.0 and blur.max() <= 1.0
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch[0].shape == (2, 3, 16, 16)


def test_crops_are_synchronised_and_change_per_epoch(tmp_path):
    _write_pairs(tmp_path, ["a"], size=(64, 64), same=True)
    ds = DeblurDataset.from_folder(tmp_path, patch_size=16, training=True, seed=1)
    crops = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        blur, sharp = ds[0]
        assert torch.equal(blur, sharp)  # same window and same flips/rotation for both
        crops.append(blur)
        ds.set_epoch(epoch)
        assert torch.equal(ds[0][0], blur)  # a pure function of (seed, epoch, index)
    assert not all(torch.equal(crops[0], c) for c in crops[1:])


def test_augment_applies_the_same_transform_to_both():
    a = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    seen = set()
    for seed in range(40):
        x, y = augment(a, a.copy(), np.random.default_rng(seed))
        assert np.array_equal(x, y)
        seen.add(x.tobytes())
    assert len(seen) == 8  # flips × 90° rotations of a square: the 8 symmetries


def test_validation_uses_centre_crop_or_full_image(tmp_path):
    _write_pairs(tmp_path, ["a"], size=(40, 30))
    crop = DeblurDataset.from_folder(tmp_path, patch_size=16, training=False)[0][0]
    full = DeblurDataset.from_folder(tmp_path, patch_size=0, training=False)[0][0]
    assert crop.shape == (3, 16, 16) and full.shape == (3, 30, 40)
    assert torch.equal(full[:, 7:23, 12:28], crop)


def test_image_smaller_than_patch_is_an_error(tmp_path):
    _write_pairs(tmp_path, ["tiny"], size=(20, 20))
    with pytest.raises(DataError, match=r"tiny.png.*smaller than the 32×32 patch"):
        DeblurDataset.from_folder(tmp_path, patch_size=32)[0]


def test_grayscale_and_rgba_are_converted(tmp_path):
    (tmp_path / "blur").mkdir()
    (tmp_path / "sharp").mkdir()
    Image.fromarray(np.full((20, 20), 100, np.uint8), "L").save(tmp_path / "blur" / "g.png")
    Image.fromarray(np.full((20, 20, 4), 50, np.uint8), "RGBA").save(tmp_path / "sharp" / "g.png")
    blur, sharp = DeblurDataset.from_folder(tmp_path, patch_size=16)[0]
    assert blur.shape == sharp.shape == (3, 16, 16)


def test_truncated_image_error_names_the_file(tmp_path):
    _write_pairs(tmp_path, ["a"])
    path = tmp_path / "blur" / "a.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="a.png"):
        DeblurDataset.from_folder(tmp_path, patch_size=16)[0]


def test_motion_kernel_is_normalised():
    rng = np.random.default_rng(0)
    for _ in range(10):
        k = motion_kernel(rng)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert k.sum() == pytest.approx(1.0, abs=1e-5) and (k >= 0).all()


def test_synthetic_pairs_are_blurred_versions_and_deterministic():
    ds = SyntheticDeblurDataset(length=4, size=48, seed=0)
    blur, sharp = ds[0]
    assert blur.shape == sharp.shape == (3, 48, 48)
    assert 0.005 < (blur - sharp).abs().mean() < 0.5
    # blur removes high frequencies: the blurry image has less gradient energy
    grad = lambda t: (t[:, 1:] - t[:, :-1]).abs().mean()  # noqa: E731
    assert grad(blur) < grad(sharp)
    assert torch.equal(ds[0][0], blur)
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], blur)
    val = SyntheticDeblurDataset(length=4, size=48, seed=0, training=False)
    v0 = val[0][0]
    val.set_epoch(5)
    assert torch.equal(val[0][0], v0)


def test_crops_per_image_cuts_several_different_crops_of_each_image(tmp_path):
    _write_pairs(tmp_path, ["a", "b"], size=(64, 64))
    pairs = find_pairs(tmp_path)
    ds = DeblurDataset(pairs, patch_size=16, training=True, seed=0, crops_per_image=3)
    assert len(ds) == 6
    for i in range(2):  # index i, i + 2, i + 4: image i
        assert all(np.array_equal(a, b) for a, b in zip(ds.load_pair(i), ds.load_pair(i + 4), strict=True))
    crops = [ds[i][1] for i in (0, 2, 4)]
    assert not torch.equal(crops[0], crops[1]) and not torch.equal(crops[1], crops[2])
    assert DeblurDataset(pairs, patch_size=16, training=False, crops_per_image=3).__len__() == 2


def test_cached_images_give_the_same_samples(tmp_path):
    _write_pairs(tmp_path, ["a", "b", "c"], size=(48, 40))
    pairs = find_pairs(tmp_path)
    plain = DeblurDataset(pairs, patch_size=16, training=True, seed=5, crops_per_image=2)
    cached = DeblurDataset(pairs, patch_size=16, training=True, seed=5, crops_per_image=2, cache=True)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            assert all(torch.equal(p, c) for p, c in zip(plain[i], cached[i], strict=True))
    expected = plain[0][0]
    (tmp_path / "blur" / "a.png").unlink()  # decoded once, at construction: the file is no longer needed
    assert torch.equal(cached[0][0], expected)
    with pytest.raises(DataError):
        plain[0]
