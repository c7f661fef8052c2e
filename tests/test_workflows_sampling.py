"""Iteration counts, validation subsets and per-task sampling weights of the training workflow."""

from collections import Counter

import pytest
from scripts.workflows import limit_per_task, num_epochs, task_sampler


def test_num_epochs():
    assert num_epochs(200000, 1000) == 200
    with pytest.raises(ValueError, match="multiple of val_interval"):
        num_epochs(10, 4)
    with pytest.raises(ValueError, match=">= 1"):
        num_epochs(0, 4)


def test_limit_per_task_keeps_the_first_of_each_task_in_order():
    items = [{"task": t, "i": i} for i, t in enumerate("mri mri ct mri ct pet".split())]
    assert [it["i"] for it in limit_per_task(items, 1)] == [0, 2, 5]
    assert [it["i"] for it in limit_per_task(items, 2)] == [0, 1, 2, 4, 5]
    assert limit_per_task(items, None) == items


def test_task_sampler_balances_tasks():
    items = [{"task": "mri"}] * 90 + [{"task": "ct"}] * 10
    assert task_sampler(items, None) is None  # plain shuffling: the larger task dominates
    sampler = task_sampler(items, {"mri": 1, "ct": 1}, seed=0)
    drawn = Counter(items[i]["task"] for _ in range(20) for i in sampler)
    assert len(list(sampler)) == 100
    assert drawn["ct"] / sum(drawn.values()) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match=r"\['ct'\]"):
        task_sampler(items, {"mri": 1})


def test_task_sampler_under_ddp_splits_a_pass_between_ranks():
    items = [{"task": "mri"}] * 90 + [{"task": "ct"}] * 11
    plain = [task_sampler(items, None, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    drawn = [list(s) for s in plain]
    assert len(drawn[0]) == len(drawn[1]) == 51  # MONAI's DistributedSampler pads to an even split
    assert set(drawn[0]) | set(drawn[1]) == set(range(101))
    assert len(set(drawn[0]) & set(drawn[1])) <= 1  # only the padding repeats a slice

    weighted = [task_sampler(items, {"mri": 1, "ct": 1}, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    drawn = [[i for _ in range(20) for i in s] for s in weighted]
    assert len(list(weighted[0])) == 51
    assert drawn[0] != drawn[1]  # each rank draws its own samples
    for ranks_draws in drawn:
        share = sum(items[i]["task"] == "ct" for i in ranks_draws) / len(ranks_draws)
        assert share == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        task_sampler(items, None, num_replicas=2, rank=2)
