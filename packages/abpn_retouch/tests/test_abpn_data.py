from pathlib import Path

import numpy as np
import pytest
import torch

from abpn_retouch.data import (
    GroupedBatchSampler,
    GroupedPatchSampler,
    PatchDataset,
    file_sources,
    match_pairs,
    patch_loader,
    split_validation,
    synthetic_sources,
    to_model,
    unpaired_note,
)
from shared.errors import DataError
from shared.images import image_bit_depth, read_image, save_image
from shared.tiling import patch_grid


def test_last_patch_of_a_row_is_flush_with_the_edge(pair_dirs):
    sources = file_sources(*pair_dirs)
    ds = PatchDataset(sources, patch_size=64, stride=48)
    # 96×128: rows start at 0 and 32 (96 - 64), columns at 0, 48 and 64 (128 - 64), not at 96 (mostly padding).
    assert [(p.top, p.left) for p in ds.patches[: len(ds.groups[0])]] == [
        (0, 0), (0, 48), (0, 64), (32, 0), (32, 48), (32, 64)]
    assert len(ds.groups[1]) == 4  # 80×80: 0 and 16 on each side
    item = ds[len(ds.groups[0]) - 1]
    assert item["input"].shape == (3, 64, 64) and item["mask"].shape == (1, 32, 32)
    assert item["mask"].min() >= 0 and item["mask"].max() <= 1
    assert item["input"].dtype == torch.uint8 and item["target"].dtype == torch.uint8
    image, _ = sources[0].load()
    np.testing.assert_array_equal(item["input"].numpy().transpose(1, 2, 0), image[32:96, 64:128])


def test_flush_grid_matches_the_regular_grid_where_patches_fit():
    assert patch_grid(112, 112, 64, 48, flush=True) == patch_grid(112, 112, 64, 48)
    assert patch_grid(341, 512, 256, 128, flush=True) == [(0, 0), (0, 128), (0, 256), (85, 0), (85, 128), (85, 256)]
    assert patch_grid(50, 80, 64, 48, flush=True) == [(0, 0), (0, 16)]  # a short side: the one padded patch


def test_only_images_smaller_than_a_patch_are_padded(tmp_path, pair_dirs):
    sources = file_sources(*pair_dirs)
    ds = PatchDataset(sources[1:], patch_size=96, stride=48, pad_small=True)  # the 80×80 pair
    item = ds[0]
    image, _ = sources[1].load()
    inside = item["input"].numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(inside[:80, :80], image)
    np.testing.assert_array_equal(inside[0, 80], image[0, 79])  # mirrored, edge pixel repeated


def test_flips_move_input_target_and_mask_together():
    sources = synthetic_sources(1, (64, 96), seed=3)
    plain = PatchDataset(sources, patch_size=64, stride=64)
    flipping = PatchDataset(sources, patch_size=64, stride=64, flip=True, seed=5)
    seen = set()
    for epoch in range(6):
        flipping.set_epoch(epoch)
        for index in range(len(plain)):
            a, b = plain[index], flipping[index]
            flipped = not torch.equal(a["input"], b["input"])
            seen.add(flipped)
            for key in ("input", "target", "mask"):
                expected = a[key].flip(-1) if flipped else a[key]
                np.testing.assert_allclose(b[key].numpy(), expected.numpy(), rtol=0, atol=1e-6, err_msg=key)
    assert seen == {True, False}
    # Which patches flip depends on (seed, epoch, index) only: a resumed run sees the same.
    again = PatchDataset(sources, patch_size=64, stride=64, flip=True, seed=5)
    again.set_epoch(5)
    assert torch.equal(again[1]["input"], flipping[1]["input"])


def test_validation_split_holds_out_whole_pairs():
    sources = synthetic_sources(5, (32, 32))
    train, held = split_validation(sources, 0.2, seed=1)
    assert len(held) == 1 and len(train) == 4 and not {s.name for s in train} & {s.name for s in held}
    assert [s.name for s in split_validation(sources, 0.2, seed=1)[1]] == [s.name for s in held]
    assert len(split_validation(sources, 0.01, seed=1)[1]) == 1  # any fraction > 0 validates on something
    assert len(split_validation(sources, 0.99, seed=1)[0]) == 1  # and trains on something
    assert split_validation(sources, 0.0)[1] == [] and split_validation(sources[:1], 0.5)[1] == []


def test_each_image_is_decoded_once_per_epoch():
    ds = PatchDataset(synthetic_sources(3, (112, 112)), patch_size=64, stride=48)
    sampler = GroupedPatchSampler(ds.groups, seed=0)
    for index in sampler:
        ds[index]
    assert ds.decode_count == 3 and len(ds) == 12
    per_patch = PatchDataset(synthetic_sources(3, (112, 112)), patch_size=64, stride=48, cache_images=0)
    for index in sampler:
        per_patch[index]
    assert per_patch.decode_count == 12


def test_sampler_groups_shuffles_and_is_reproducible():
    groups = [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    sampler = GroupedPatchSampler(groups, seed=1)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(9))
        image_of = [next(g for g, members in enumerate(groups) if i in members) for i in order]
        assert sum(a != b for a, b in zip(image_of, image_of[1:], strict=False)) == 2  # contiguous groups
        orders.append(order)
    assert len({tuple(o) for o in orders}) > 1
    sampler.set_epoch(2)
    assert list(sampler) == orders[2]
    sampler.set_epoch(2, skip=4)
    assert list(sampler) == orders[2][4:] and len(sampler) == 5


def test_sampler_orders_images_and_patches_by_the_shared_epoch_permutation():
    from shared.sampler import epoch_permutation

    groups = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]
    sampler = GroupedPatchSampler(groups, seed=4)
    sampler.set_epoch(3)
    order = sampler.epoch_order()
    images = [int(str(i)[0]) - 1 for i in order]
    assert list(dict.fromkeys(images)) == epoch_permutation(3, 4, 3)
    flat = [i for g in groups for i in g]
    shared_order = [flat[k] for k in epoch_permutation(9, 4, 3)]
    for group in groups:
        assert [i for i in order if i in group] == [i for i in shared_order if i in group]


def test_sampler_splits_ranks_equally():
    groups = [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    parts = [list(GroupedPatchSampler(groups, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 5
    assert set(parts[0]) | set(parts[1]) == set(range(9))


GROUPS = [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9], [10], [11, 12, 13, 14], [15, 16, 17, 18, 19, 20, 21]]


def _image_of(index: int) -> int:
    return next(g for g, members in enumerate(GROUPS) if index in members)


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_batches_give_each_worker_one_run_of_the_grouped_order(workers, batch_size):
    patches = GroupedPatchSampler(GROUPS, seed=5)
    batches = GroupedBatchSampler(patches, batch_size, workers)
    batches.set_epoch(2)
    order, laid_out = patches.epoch_order(), list(batches)
    # Same batch count and sizes as plain batching (what DDP ranks and resume positions rely on).
    assert [len(b) for b in laid_out] == [len(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    assert len(batches) == len(laid_out)
    flat = [i for b in laid_out for i in b]
    assert sorted(flat) == list(range(22))
    if workers <= 1:
        assert flat == order
    layout = max(workers, 1)
    runs = [[i for b in laid_out[w::layout] for i in b] for w in range(layout)]
    assert [i for run in runs for i in run] == order  # worker w's batches are one contiguous stretch
    images = [{_image_of(i) for i in run} for run in runs]
    shared = {g for g in range(len(GROUPS)) if sum(g in seen for seen in images) > 1}
    assert len(shared) <= layout - 1  # only where two runs meet
    assert list(batches) == laid_out  # deterministic
    batches.set_epoch(3)
    assert list(batches) != laid_out


def test_batch_resume_skips_whole_batches_of_the_interrupted_layout():
    batches = GroupedBatchSampler(GroupedPatchSampler(GROUPS, seed=2), batch_size=3, num_workers=2)
    batches.set_epoch(1)
    full = list(batches)
    batches.set_epoch(1, skip=3)
    assert list(batches) == full[3:] and len(batches) == len(full) - 3
    # A resume with another worker count still continues the interrupted run's sequence.
    fewer = GroupedBatchSampler(GroupedPatchSampler(GROUPS, seed=2), batch_size=3, num_workers=0)
    fewer.set_epoch(1, skip=3, layout_workers=2)
    assert list(fewer) == full[3:]
    fewer.set_epoch(2)
    assert [i for b in fewer for i in b] == fewer.sampler.epoch_order()  # override lasts one epoch


def test_batch_sampler_keeps_ranks_in_step():
    parts = []
    for rank in range(2):
        batches = GroupedBatchSampler(GroupedPatchSampler(GROUPS, seed=3, rank=rank, world_size=2), 4, 2)
        parts.append(list(batches))
    assert len(parts[0]) == len(parts[1]) == 3
    assert {i for part in parts for b in part for i in b} == set(range(22))


class _WorkerTagged(PatchDataset):
    """Reports which worker served a patch and how many images that worker has decoded so far."""

    def __getitem__(self, idx):
        item = super().__getitem__(idx)
        item.update(index=torch.tensor(idx), worker=torch.tensor(torch.utils.data.get_worker_info().id),
                    decodes=torch.tensor(self.decode_count))
        return item


def _served(loader) -> list[dict]:
    return [{"index": batch["index"].tolist(), "images": set(batch["image"].tolist()),
             "worker": int(batch["worker"][0]), "decodes": int(batch["decodes"].max())} for batch in loader]


def test_two_worker_loader_decodes_each_image_once():
    dataset = _WorkerTagged(synthetic_sources(4, (112, 112)), patch_size=64, stride=48)  # 4 patches each
    loader = patch_loader(dataset, batch_size=2, num_workers=2, seed=7)
    for skip in (0, 3):
        loader.batch_sampler.set_epoch(1, skip=skip)
        expected = list(loader.batch_sampler)
        served = _served(loader)
        assert [b["index"] for b in served] == expected
        per_worker = [set().union(*(b["images"] for b in served if b["worker"] == w)) for w in range(2)]
        assert not per_worker[0] & per_worker[1]
        assert sum(max(b["decodes"] for b in served if b["worker"] == w) for w in range(2)) == len(
            per_worker[0] | per_worker[1])
    assert sorted(i for b in loader.batch_sampler.epoch_batches() for i in b) == list(range(16))


def test_missing_unpaired_and_size_mismatch(tmp_path, pair_dirs):
    original, retouch = pair_dirs
    with pytest.raises(DataError, match="folder not found"):
        file_sources(tmp_path / "nope", retouch)
    (original / "extra.png").write_bytes((original / "img_0.png").read_bytes())
    with pytest.raises(DataError, match="extra.png: no matching file"):
        file_sources(original, retouch)
    (original / "extra.png").unlink()
    (retouch / "img_1.png").write_bytes((retouch / "img_0.png").read_bytes())
    with pytest.raises(DataError, match="img_1.png: retouched image is 128×96"):
        file_sources(original, retouch)


def test_too_small_and_truncated(tmp_path, pair_dirs):
    sources = file_sources(*pair_dirs)
    with pytest.raises(DataError, match="img_1.png: image is 80×80, smaller than --patch-size 96"):
        PatchDataset(sources, patch_size=96, stride=64)
    assert len(PatchDataset(sources, patch_size=96, stride=64, pad_small=True)) > 0
    broken = Path(pair_dirs[0]) / "img_0.png"
    broken.write_bytes(broken.read_bytes()[:200])
    ds = PatchDataset(file_sources(*pair_dirs), patch_size=64, stride=48)
    with pytest.raises(DataError, match="img_0.png: unreadable or truncated"):
        ds[0]


def test_synthetic_pairs_differ_locally():
    from abpn_retouch.data import synthetic_portrait

    src, dst = synthetic_portrait(0, 128, 128)
    diff = np.abs(src.astype(int) - dst.astype(int)).max(axis=2)
    assert src.shape == (128, 128, 3) and 0.01 < (diff > 3).mean() < 0.5
    assert torch.equal(torch.from_numpy(synthetic_portrait(0, 128, 128)[0]), torch.from_numpy(src))


def test_balance_repeats_a_small_pairs_patches_up_to_the_largest():
    sources = synthetic_sources(1, (64, 64)) + synthetic_sources(1, (64, 192), seed=1)
    plain = PatchDataset(sources, patch_size=64, stride=64)
    assert [len(g) for g in plain.groups] == [1, 3]
    balanced = PatchDataset(sources, patch_size=64, stride=64, balance=True)
    assert [len(g) for g in balanced.groups] == [3, 3] and len(balanced) == 6
    assert {balanced.patches[i] for i in balanced.groups[0]} == {plain.patches[0]}
    assert [balanced.patches[i] for i in balanced.groups[1]] == [plain.patches[i] for i in plain.groups[1]]


def test_mixed_sampler_interleaves_images_and_is_the_shared_permutation():
    from shared.sampler import epoch_permutation

    groups = [list(range(0, 6)), list(range(6, 12))]
    mixed = GroupedPatchSampler(groups, seed=3, mixed=True)
    mixed.set_epoch(2)
    assert list(mixed) == epoch_permutation(12, 3, 2)
    grouped = GroupedPatchSampler(groups, seed=3)
    grouped.set_epoch(2)
    firsts = list(grouped)[:6]
    assert set(firsts) in (set(groups[0]), set(groups[1]))  # grouped: one image after the other


def test_unpaired_files_are_left_out_and_listed_unless_strict(tmp_path, pair_dirs):
    original, retouch = pair_dirs
    (original / "extra.png").write_bytes((original / "img_0.png").read_bytes())
    (retouch / "only_retouched.jpg").write_bytes((retouch / "img_1.png").read_bytes())
    unpaired = []
    sources = file_sources(original, retouch, strict=False, unpaired=unpaired)
    assert [s.name for s in sources] == ["img_0", "img_1"]
    assert unpaired == [original / "extra.png", retouch / "only_retouched.jpg"]
    note = unpaired_note(unpaired, len(sources))
    assert note.startswith("note: 2 unpaired file(s) left out, 2 pair(s) used")
    assert "extra.png" in note and "only_retouched.jpg" in note and "--strict-pairs" in note
    many = unpaired_note([Path(f"f{i}.png") for i in range(9)], 3)
    assert "f4.png, ..." in many and "f5.png" not in many  # the first few names, not all of them
    with pytest.raises(DataError, match="extra.png: no matching file"):
        file_sources(original, retouch)  # strict, as the library call has always been


def test_folders_where_nothing_pairs_are_refused_even_when_lenient(tmp_path, pair_dirs):
    original, retouch = pair_dirs
    for path in retouch.iterdir():
        path.rename(path.with_name("other_" + path.name))
    with pytest.raises(DataError, match="no matching file in"):
        match_pairs(original, retouch, strict=False)
    (original / "img_0.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="two files share the name 'img_0'"):
        match_pairs(original, retouch, strict=False)


def test_16bit_pairs_are_read_at_full_precision(tmp_path, pair_dirs, gradient):
    original, retouch = pair_dirs
    source = gradient(64, 64, seed=1)
    target = source.copy()
    target[16:40, 20:44] += 0.05  # a local edit
    save_image(original / "deep.png", source, bit_depth=16)
    save_image(retouch / "deep.png", target, bit_depth=16)
    assert image_bit_depth(original / "deep.png") == 16
    sources = {s.name: s for s in file_sources(original, retouch)}
    # One 16-bit file makes every pair float32, so a batch never mixes dtypes.
    assert all(s.full_precision for s in sources.values())
    image, gt = sources["deep"].load()
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, source, atol=1 / 65535)
    # Sub-8-bit detail survives: an 8-bit read is off by up to half a level, the 16-bit one by 1/65535.
    assert np.abs(read_image(original / "deep.png").astype(np.float32) / 255 - source).max() > 1 / 1024
    eight_bit_pair = sources["img_0"].load()[0]
    np.testing.assert_array_equal(eight_bit_pair, read_image(original / "img_0.png").astype(np.float32) / 255)
    ds = PatchDataset(list(sources.values()), patch_size=32, stride=32, pad_small=True)
    deep_index = list(sources).index("deep")
    item = ds[ds.groups[deep_index][0]]
    inputs, targets, mask = to_model(item)
    assert inputs.dtype == torch.float32
    np.testing.assert_allclose(inputs.permute(1, 2, 0).numpy(), source[:32, :32], atol=1 / 65535)
    assert mask.max() > 0.5  # the GT mask (8-bit levels) finds the edit
