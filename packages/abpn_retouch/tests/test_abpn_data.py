from pathlib import Path

import numpy as np
import pytest
import torch

from abpn_retouch.data import (
    GroupedBatchSampler,
    GroupedPatchSampler,
    PatchDataset,
    file_sources,
    patch_loader,
    synthetic_sources,
)
from shared.errors import DataError
from shared.tiling import patch_grid


def test_length_is_patch_count_and_border_is_reflected(pair_dirs):
    sources = file_sources(*pair_dirs)
    ds = PatchDataset(sources, patch_size=64, stride=48)
    expected = sum(len(patch_grid(*s.size, 64, 48)) for s in sources)
    assert len(ds) == expected
    item = ds[len(ds.groups[0]) - 1]  # bottom-right patch of the 96×128 image crosses the border
    assert item["input"].shape == (3, 64, 64) and item["mask"].shape == (1, 32, 32)
    assert item["mask"].min() >= 0 and item["mask"].max() <= 1
    image, _ = sources[0].load()
    ref = ds.patches[len(ds.groups[0]) - 1]
    inside = 128 - ref.left  # columns still inside the image; the next one mirrors the last column
    assert item["input"].dtype == torch.uint8 and item["target"].dtype == torch.uint8
    np.testing.assert_array_equal(item["input"][:, 0, inside].numpy(), image[ref.top, 127])


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
