"""The epoch sampler: order from (seed, epoch) alone, equal shards, exact mid-epoch start."""

import pytest
import torch

from shared.sampler import EpochSampler, epoch_permutation


def test_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)
    # The mixing every package used before it moved here: old runs keep their orders.
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3 * 100_003 + 2)).tolist()
    assert list(a) == expected == epoch_permutation(10, 3, 2)


def test_ranks_share_one_permutation_in_equal_parts():
    shards = []
    for rank in range(3):
        s = EpochSampler(7, seed=1, rank=rank, world_size=3)
        s.set_epoch(4)
        shards.append(list(s))
    assert [len(x) for x in shards] == [3, 3, 3]  # 7 padded to 9 by wrapping around
    order = epoch_permutation(7, 1, 4)
    padded = order + order[:2]
    assert [padded[r::3] for r in range(3)] == shards


def test_mid_epoch_start_continues_on_the_next_sample_with_and_without_ddp():
    for rank, world in ((0, 1), (1, 2)):
        whole = EpochSampler(11, seed=5, rank=rank, world_size=world)
        whole.set_epoch(1)
        part = EpochSampler(11, seed=5, rank=rank, world_size=world)
        part.set_epoch(1, start=4)
        assert list(part) == list(whole)[4:]
        assert len(part) == len(whole) - 4


def test_subset_indices_unshuffled_and_batches():
    s = EpochSampler([10, 20, 30, 40, 50], shuffle=False, rank=0, world_size=2)
    assert list(s) == [10, 30, 50]
    assert s.batches_per_epoch(2) == 2 and s.batches_per_epoch(2, drop_last=True) == 1
    assert list(EpochSampler(0)) == []
    with pytest.raises(ValueError, match="rank 2 is outside a world of 2"):
        EpochSampler(4, rank=2, world_size=2)
