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
    ds = DeblurDataset(tmp_path, patch_size=16, is_training=True)
    blur, sharp = ds[0]
    assert blur.shape == sharp.shape == (3, 16, 16)
    assert blur.dtype == torch.float32 and blur.min() >= -1.0 and blur.max() <= 1.0
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch[0].shape == (2, 3, 16, 16)


def test_crops_are_synchronised_and_change_per_epoch(tmp_path):
    _write_pairs(tmp_path, ["a"], size=(64, 64), same=True)
    ds = DeblurDataset(tmp_path, patch_size=16, is_training=True, seed=1)
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
    crop = DeblurDataset(tmp_path, patch_size=16, is_training=False)[0][0]
    full = DeblurDataset(tmp_path, patch_size=0, is_training=False)[0][0]
    assert crop.shape == (3, 16, 16) and full.shape == (3, 30, 40)
    assert torch.equal(full[:, 7:23, 12:28], crop)


def test_image_smaller_than_patch_is_an_error(tmp_path):
    _write_pairs(tmp_path, ["tiny"], size=(20, 20))
    with pytest.raises(DataError, match=r"tiny.png.*smaller than the 32×32 patch"):
        DeblurDataset(tmp_path, patch_size=32)[0]


def test_grayscale_and_rgba_are_converted(tmp_path):
    (tmp_path / "blur").mkdir()
    (tmp_path / "sharp").mkdir()
    Image.fromarray(np.full((20, 20), 100, np.uint8), "L").save(tmp_path / "blur" / "g.png")
    Image.fromarray(np.full((20, 20, 4), 50, np.uint8), "RGBA").save(tmp_path / "sharp" / "g.png")
    blur, sharp = DeblurDataset(tmp_path, patch_size=16)[0]
    assert blur.shape == sharp.shape == (3, 16, 16)


def test_truncated_image_error_names_the_file(tmp_path):
    _write_pairs(tmp_path, ["a"])
    path = tmp_path / "blur" / "a.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="a.png"):
        DeblurDataset(tmp_path, patch_size=16)[0]


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
    ds = DeblurDataset.from_pairs(pairs, patch_size=16, is_training=True, seed=0, crops_per_image=3)
    assert len(ds) == 6
    for i in range(2):  # index i, i + 2, i + 4: image i
        assert all(np.array_equal(a, b) for a, b in zip(ds.load_pair(i), ds.load_pair(i + 4), strict=True))
    crops = [ds[i][1] for i in (0, 2, 4)]
    assert not torch.equal(crops[0], crops[1]) and not torch.equal(crops[1], crops[2])
    assert DeblurDataset.from_pairs(pairs, patch_size=16, is_training=False, crops_per_image=3).__len__() == 2


def test_cached_images_give_the_same_samples(tmp_path):
    _write_pairs(tmp_path, ["a", "b", "c"], size=(48, 40))
    pairs = find_pairs(tmp_path)
    plain = DeblurDataset.from_pairs(pairs, patch_size=16, is_training=True, seed=5, crops_per_image=2)
    cached = DeblurDataset.from_pairs(pairs, patch_size=16, is_training=True, seed=5, crops_per_image=2, cache=True)
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


def test_spec_dataset_and_training_loop_run_as_written(tmp_path):
    from torch import nn
    from torch.utils.data import DataLoader

    for name in ("a", "b", "c", "d"):
        _write_pairs(tmp_path, [name], size=(300, 272))
    data_dir = str(tmp_path)
    # The original project's constructor call and its "Simplified Training Loop", verbatim.
    dataset = DeblurDataset(data_dir, transform=None, patch_size=256, is_training=True)
    train_loader = DataLoader(dataset, batch_size=4, shuffle=True)

    def train(model, train_loader, criterion, optimizer, device):
        model.train()
        for blur_batch, sharp_batch in train_loader:
            # blur_batch shape: [B, 3, 256, 256] - already cropped and augmented!
            blur_batch = blur_batch.to(device)
            sharp_batch = sharp_batch.to(device)

            optimizer.zero_grad()
            outputs = model(blur_batch)
            loss = criterion(outputs, sharp_batch)
            loss.backward()
            optimizer.step()

    model = nn.Conv2d(3, 3, 3, padding=1)  # any image-to-image model: the loop is what is checked
    seen = []
    model.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    before = model.weight.detach().clone()
    train(model, train_loader, nn.L1Loss(), torch.optim.AdamW(model.parameters(), lr=1e-3), torch.device("cpu"))
    assert [batch.shape for batch in seen] == [(4, 3, 256, 256)]  # 4 images → 4 random 256×256 patches
    assert seen[0].min() >= -1.0 and seen[0].max() <= 1.0
    assert not torch.equal(model.weight, before)
    blur, sharp = DeblurDataset(data_dir, patch_size=256, is_training=False)[0]
    assert blur.shape == sharp.shape == (3, 256, 256)


def test_transform_gets_float_patches_and_torchvision_normalize_matches_the_default(tmp_path):
    _write_pairs(tmp_path, ["a", "b"], size=(48, 40))
    seen = []

    def keep(patch):
        seen.append(patch)
        return patch

    blur, sharp = DeblurDataset(tmp_path, transform=keep, patch_size=16, seed=3)[1]
    assert blur.shape == sharp.shape == (16, 16, 3) and blur.dtype == np.float32
    assert blur.min() >= 0.0 and blur.max() <= 1.0 and len(seen) == 2
    transforms = pytest.importorskip("torchvision.transforms")
    normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    ours = DeblurDataset(tmp_path, patch_size=16, seed=3)[1]
    theirs = DeblurDataset(tmp_path, transform=normalize, patch_size=16, seed=3)[1]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_16bit_pairs_are_read_at_full_precision(tmp_path):
    from shared.images import save_image

    rng = np.random.default_rng(0)
    # Values 0, 1/65535, ...: steps 257 times finer than 8 bits can hold.
    levels = rng.integers(0, 65536, (24, 20, 3)).astype(np.uint16)
    levels[0, :4, 0] = [1000, 1001, 1002, 1003]
    for sub in ("blur", "sharp"):
        (tmp_path / sub).mkdir()
        save_image(tmp_path / sub / "a.png", levels / 65535.0, bit_depth=16)
    blur, sharp = DeblurDataset(tmp_path, patch_size=0, is_training=False)[0]
    expected = torch.from_numpy(levels.astype(np.float64) / 65535.0 * 2 - 1).permute(2, 0, 1).float()
    torch.testing.assert_close(blur, expected, rtol=0, atol=1e-6)
    assert len(set(blur[0, 0, :4].tolist())) == 4  # four distinct values, one 8-bit level
    patch = DeblurDataset(tmp_path, patch_size=16, is_training=True)[0][0]
    assert len(torch.unique(patch)) > 256  # an 8-bit read has at most 256 levels


def test_synthetic_blur_replaces_that_fraction_of_inputs_by_the_sharp_crop_under_a_kernel(tmp_path):
    _write_pairs(tmp_path, ["a", "b"], size=(48, 48), same=True)  # recorded "blur" = sharp: easy to tell apart
    pairs = find_pairs(tmp_path)

    def dataset(fraction):
        ds = DeblurDataset.from_pairs(pairs, patch_size=32, is_training=True, seed=3, crops_per_image=20,
                                      synthetic_blur=fraction)
        ds.set_epoch(2)
        return ds

    plain, always, half = dataset(0.0), dataset(1.0), dataset(0.5)
    for index in range(4):
        blur, sharp = plain[index]
        assert torch.equal(blur, sharp)  # off: the recorded input, unchanged
        blur, sharp = always[index]
        assert torch.equal(sharp, plain[index][1])  # the same crop; only the input differs
        # Motion blur averages neighbours: noise-like texture loses most of its contrast.
        assert float(blur.std()) < 0.8 * float(sharp.std())
        assert torch.equal(blur, always[index][0])  # a pure function of (seed, epoch, index): exact resume
    replaced = sum(not torch.equal(*half[i]) for i in range(len(half)))
    assert 10 <= replaced <= 30, replaced  # about half of 40
    with pytest.raises(DataError, match="synthetic_blur must be in"):
        dataset(1.5)
