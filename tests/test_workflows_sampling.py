"""The resumable per-task sampler, per-item seeds of the random transforms, loader workers, validation subsets."""

import os
from collections import Counter

import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandSpatialCropd
from scripts.workflows import SeededDataset, TaskSampler, default_num_workers, limit_per_task
from torch.utils.data import DataLoader


def test_limit_per_task_keeps_the_first_of_each_task_in_order():
    items = [{"task": t, "i": i} for i, t in enumerate("mri mri ct mri ct pet".split())]
    assert [it["i"] for it in limit_per_task(items, 1)] == [0, 2, 5]
    assert [it["i"] for it in limit_per_task(items, 2)] == [0, 1, 2, 4, 5]
    assert limit_per_task(items, None) == items


def test_a_pass_is_a_shuffle_of_all_items_reseeded_per_pass():
    items = [{"task": "mri"}] * 90 + [{"task": "ct"}] * 10
    sampler = TaskSampler(items, None, seed=3)
    first, second = list(sampler), list(sampler)
    assert len(sampler) == len(first) == 100
    assert sorted(i for i, _ in first) == list(range(100))  # every slice once: the larger task dominates
    assert [i for i, _ in first] != [i for i, _ in second]
    assert first == list(TaskSampler(items, None, seed=3))  # a function of (seed, pass) only
    assert first != list(TaskSampler(items, None, seed=4))
    assert len({s for _, s in first + second}) == 200  # a seed per draw


def test_seek_starts_a_pass_mid_way_as_the_uninterrupted_sampler_would():
    items = [{"task": "mri"}] * 7
    uninterrupted = TaskSampler(items, None, seed=0)
    passes = [list(uninterrupted) for _ in range(3)]
    resumed = TaskSampler(items, None, seed=0)
    resumed.seek(1, 5)
    assert list(resumed) == passes[1][5:]
    assert list(resumed) == passes[2]
    with pytest.raises(ValueError, match="cannot seek"):
        resumed.seek(0, 8)


def test_task_weights_balance_tasks():
    items = [{"task": "mri"}] * 90 + [{"task": "ct"}] * 10
    sampler = TaskSampler(items, {"mri": 1, "ct": 1}, seed=0)
    drawn = Counter(items[i]["task"] for _ in range(20) for i, _ in sampler)
    assert len(list(sampler)) == 100
    assert drawn["ct"] / sum(drawn.values()) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match=r"\['ct'\]"):
        TaskSampler(items, {"mri": 1})
    with pytest.raises(ValueError, match="no training items"):
        TaskSampler([], None)


def test_under_ddp_each_rank_draws_its_share_of_a_pass():
    items = [{"task": "mri"}] * 90 + [{"task": "ct"}] * 11
    plain = [list(TaskSampler(items, None, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    indices = [[i for i, _ in drawn] for drawn in plain]
    assert len(indices[0]) == len(indices[1]) == 51  # padded to an even split, as DistributedSampler does
    assert set(indices[0]) | set(indices[1]) == set(range(101))
    assert len(set(indices[0]) & set(indices[1])) <= 1  # only the padding repeats a slice
    assert {s for _, s in plain[0]}.isdisjoint(s for _, s in plain[1])  # ranks draw other random crops

    weighted = [TaskSampler(items, {"mri": 1, "ct": 1}, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    drawn = [[i for _ in range(20) for i, _ in s] for s in weighted]
    assert len(list(weighted[0])) == 51
    assert drawn[0] != drawn[1]
    for ranks_draws in drawn:
        share = sum(items[i]["task"] == "ct" for i in ranks_draws) / len(ranks_draws)
        assert share == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        TaskSampler(items, None, num_replicas=2, rank=2)


def test_a_mix_share_of_every_batch_comes_from_the_other_tasks_items_as_the_seed_says():
    items = [{"task": "mri"}] * 30 + [{"task": "ct", "source": "demo"}] * 2 + [{"task": "pet", "source": "demo"}] * 10
    sampler = TaskSampler(items, None, seed=1, mix=0.25)
    first, second = [i for i, _ in sampler], [i for i, _ in sampler]
    assert len(sampler) == len(first) == 40 and sorted(i for i in first if i < 30) == list(range(30))
    for batch in (first[k : k + 8] for k in range(0, 40, 8)):  # a quarter of each batch, evenly spread
        assert sum(i >= 30 for i in batch) == 2
    drawn = Counter(items[i]["task"] for _ in range(10) for i, _ in sampler if i >= 30)
    assert drawn["ct"] / (drawn["ct"] + drawn["pet"]) == pytest.approx(0.5, abs=0.1)  # tasks equally, not slices
    assert first == [i for i, _ in TaskSampler(items, None, seed=1, mix=0.25)] and first != second
    assert first != [i for i, _ in TaskSampler(items, None, seed=2, mix=0.25)]
    resumed = TaskSampler(items, None, seed=1, mix=0.25)
    resumed.seek(1, 13)
    assert [i for i, _ in resumed] == second[13:]
    assert all(i < 30 for i, _ in TaskSampler(items, None, seed=1))  # no mix: the other items are never drawn
    weighted = TaskSampler(items, {"mri": 1}, seed=1, mix=0.5)  # own weights need not name the other tasks
    assert sum(i >= 30 for i, _ in weighted) == 30
    with pytest.raises(ValueError, match=r"mix 1.0 is not in \[0, 1\)"):
        TaskSampler(items, None, mix=1.0)


def random_crops(num_workers: int) -> list[torch.Tensor]:
    data = [{"image": torch.arange(64.0).reshape(1, 8, 8) + 100 * i, "task": "mri"} for i in range(6)]
    dataset = Dataset(data, Compose([RandSpatialCropd("image", roi_size=(3, 3), random_size=False)]))
    sampler = TaskSampler(data, None, seed=0)
    loader = DataLoader(SeededDataset(dataset), batch_size=2, sampler=sampler, num_workers=num_workers)
    return [batch["image"] for batch in loader]


def test_random_transforms_follow_the_item_seed_not_the_worker():
    in_process, in_workers = random_crops(0), random_crops(2)
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers, strict=True))
    crops = torch.cat(in_process)
    corners = {(int(c[0, 0, 0]) % 100) for c in crops}
    assert len(corners) > 1  # the crops are random, not all at one place


@pytest.mark.parametrize(("cpus", "local", "workers"), [(1, 1, 0), (2, 1, 1), (16, 1, 4), (8, 2, 3), (2, 4, 0)])
def test_default_num_workers_follows_the_cpus_this_process_has(cpus, local, workers, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    assert default_num_workers() == workers
