"""geovit.data.samplers: the training order and augmentation are functions of (seed, epoch, index)."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from geovit.data.samplers import EpochSampler, SeededAugment, mix_seed, resume_plan
from geovit.data.transforms import RandomFlipRotate


def test_mix_seed_keeps_the_values_runs_were_seeded_with():
    # pinned: a change here changes every augmentation and mask of every resumed run
    assert [mix_seed(), mix_seed(0), mix_seed(0, 1, 2), mix_seed(3, 0, 7)] == [
        3138146411, 2334269327, 2439208070, 591892836]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-2**40, 2**40), max_size=4))
def test_mix_seed_is_a_32_bit_value(values):
    assert 0 <= mix_seed(*values) < 2**32


def _shard(n, replicas, rank, seed, epoch, skip=0):
    sampler = EpochSampler(range(n), num_replicas=replicas, rank=rank, shuffle=True, seed=seed, skip=skip)
    sampler.set_epoch(epoch)
    return list(sampler)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 4), st.integers(0, 2**31), st.integers(0, 6))
def test_every_index_once_per_epoch_across_ranks_when_divisible(per_rank, replicas, seed, epoch):
    n = per_rank * replicas
    shards = [_shard(n, replicas, r, seed, epoch) for r in range(replicas)]
    assert all(len(s) == per_rank for s in shards)
    assert sorted(i for s in shards for i in s) == list(range(n))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.integers(0, 2**31), st.integers(0, 6))
def test_uneven_sizes_still_cover_every_index_with_equal_shards(n, replicas, seed, epoch):
    shards = [_shard(n, replicas, r, seed, epoch) for r in range(replicas)]
    assert len({len(s) for s in shards}) == 1
    assert set().union(*shards) == set(range(n))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 3), st.integers(0, 2**31), st.integers(0, 6), st.integers(0, 2**31))
def test_order_depends_only_on_seed_and_epoch(n, replicas, seed, epoch, noise):
    first = [_shard(n, replicas, r, seed, epoch) for r in range(replicas)]
    torch.manual_seed(noise)  # the global RNG plays no part
    sampler = EpochSampler(range(n), num_replicas=replicas, rank=0, shuffle=True, seed=seed)
    for other in (epoch + 1, epoch):  # having been at another epoch before does not matter either
        sampler.set_epoch(other)
        _ = list(sampler)
    assert list(sampler) == first[0]
    assert [_shard(n, replicas, r, seed, epoch) for r in range(replicas)] == first


def test_epochs_and_seeds_shuffle_differently():
    assert _shard(50, 1, 0, seed=0, epoch=0) != _shard(50, 1, 0, seed=0, epoch=1)
    assert _shard(50, 1, 0, seed=0, epoch=0) != _shard(50, 1, 0, seed=1, epoch=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 3), st.integers(0, 2**31), st.integers(0, 4), st.integers(0, 45))
def test_skip_drops_the_consumed_prefix_once(n, replicas, seed, epoch, skip):
    sampler = EpochSampler(range(n), num_replicas=replicas, rank=replicas - 1, shuffle=True, seed=seed, skip=skip)
    sampler.set_epoch(epoch)
    full = _shard(n, replicas, replicas - 1, seed, epoch)
    assert list(sampler) == full[skip:]
    assert list(sampler) == full  # the next pass over the same epoch is whole again
    assert len(sampler) == len(full)  # Lightning counts the consumed batches itself


def test_set_epoch_reaches_the_dataset():
    aug = SeededAugment([{"image": torch.zeros(1, 2, 2), "channels": torch.tensor([0])}] * 4, RandomFlipRotate)
    EpochSampler(aug, num_replicas=1, rank=0).set_epoch(5)
    assert aug.epoch == 5


def _images():
    return [{"image": torch.arange(16.0).reshape(1, 4, 4) + i, "channels": torch.tensor([0])} for i in range(8)]


def test_seeded_augment_is_a_function_of_seed_epoch_and_index():
    aug = SeededAugment(_images(), RandomFlipRotate, seed=3)
    first = [aug[i]["image"] for i in range(8)]
    torch.manual_seed(123)
    assert all(torch.equal(first[i], aug[i]["image"]) for i in reversed(range(8)))  # any order, any global RNG
    assert any(not torch.equal(first[i], _images()[i]["image"]) for i in range(8))  # it does augment
    aug.set_epoch(1)
    assert not all(torch.equal(a, aug[i]["image"]) for i, a in enumerate(first))
    aug.set_epoch(0)
    assert all(torch.equal(a, aug[i]["image"]) for i, a in enumerate(first))
    other_seed = SeededAugment(_images(), RandomFlipRotate, seed=4)
    assert not all(torch.equal(a, other_seed[i]["image"]) for i, a in enumerate(first))


def test_seeded_augment_gives_the_same_samples_in_worker_processes():
    aug = SeededAugment(_images(), RandomFlipRotate, seed=7)
    aug.set_epoch(2)
    local = torch.stack([aug[i]["image"] for i in range(8)])
    loaded = torch.cat([b["image"] for b in DataLoader(aug, batch_size=3, num_workers=2)])
    assert torch.equal(local, loaded)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.integers(0, 5), st.integers(0, 12), st.integers(1, 10))
def test_resume_plan(saved_epoch, epoch, done, batches):
    resumed_epoch, skip = resume_plan((saved_epoch, done), epoch, batches)
    if done >= batches:  # the checkpoint closed its epoch: the next one runs whole
        assert (resumed_epoch, skip) == (max(epoch, saved_epoch + 1), 0)
    elif saved_epoch == epoch:  # mid-epoch: exactly the consumed batches are skipped
        assert (resumed_epoch, skip) == (epoch, done)
    else:  # a position from another epoch says nothing about this one
        assert (resumed_epoch, skip) == (epoch, 0)
    assert resume_plan(None, epoch, batches) == (epoch, 0)


@settings(max_examples=30, deadline=None)
@given(st.integers(4, 40), st.integers(1, 4), st.integers(0, 2**31), st.integers(1, 10))
def test_a_resumed_epoch_draws_what_the_uninterrupted_one_had_left(n, batch, seed, done):
    batches = n // batch
    epoch, skip = resume_plan((1, done), 1, batches)
    sampler = EpochSampler(range(n), num_replicas=1, rank=0, seed=seed, skip=skip * batch)
    sampler.set_epoch(epoch)
    drawn = list(sampler)
    if done < batches:
        assert drawn == _shard(n, 1, 0, seed, 1)[done * batch:]
    else:  # resumed from the checkpoint of the epoch's end: the next epoch, from its start
        assert drawn == _shard(n, 1, 0, seed, 2)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(0, 70), st.integers(1, 3), st.integers(0, 100), st.integers(0, 4),
       st.integers(0, 70))
def test_cycle_sampler_covers_every_index_per_cycle_and_resumes_exactly(n, length, replicas, seed, epoch, skip):
    from geovit.data.samplers import CycleSampler

    def items(rank, skip=0, draw_seeds=False):
        s = CycleSampler(n, length, num_replicas=replicas, rank=rank, seed=seed, stream=1, draw_seeds=draw_seeds)
        s.set_epoch(epoch)
        s.skip = skip
        return list(s)

    shards = [items(r) for r in range(replicas)]
    assert all(len(s) == length for s in shards)
    per_rank = -(-n // replicas)  # a full cycle's share of one rank (padded as DistributedSampler)
    if length >= per_rank:  # the first cycle's shards together cover every index
        assert set().union(*(s[:per_rank] for s in shards)) == set(range(n))
    assert items(0, skip) == shards[0][skip:]  # a resumed epoch continues where the first stopped
    seeded = items(0, draw_seeds=True)
    assert [i for i, _ in seeded] == shards[0]
    assert items(0, skip, draw_seeds=True) == seeded[skip:]  # the per-item draw seeds resume too
