"""How the training workflow draws its data: a resumable per-task sampler, per-item random seeds, loader workers.

A training run must give the same result whether it ran in one go or was stopped and resumed, and whatever the
number of loader workers. So the order of a pass over the data is a function of ``(seed, pass)`` only
(:class:`TaskSampler`, which can start mid-pass), and the random transforms of each draw are seeded from
``(seed, pass, rank, position)`` (:class:`SeededDataset`), not from the state of a worker process.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data.utils import set_rnd
from torch.utils.data import Dataset, Sampler

from ..data.slices import limit_per_task

__all__ = ["TaskSampler", "SeededDataset", "default_num_workers", "limit_per_task"]

_ORDER, _DRAWS, _SEEDS, _OTHER = 0, 1, 2, 3  # independent random streams of a pass


def _generator(*entropy: int) -> torch.Generator:
    """A torch generator seeded from several integers (numpy's ``SeedSequence`` mixes them)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class TaskSampler(Sampler[tuple[int, int]]):
    """Draws one pass over the training items at a time, re-seeded per pass; yields ``(index, item seed)``.

    Without ``task_weights`` a pass is a shuffle of all items (every slice once; the task with most slices
    dominates, as in the released code). With ``task_weights`` a pass is as many draws with replacement, a task's
    share of them proportional to its weight whatever its slice count. Under ``DistributedDataParallel``
    (``num_replicas`` given) each rank draws its share of a pass: disjoint slices of one shuffle (padded to an
    even split, as ``DistributedSampler`` does), or its own weighted draws.

    With ``mix`` > 0, the items that carry a ``"source"`` (other tasks' items, :mod:`scripts.data.other_tasks`)
    are not part of the pass above, which covers the training's own items: a share ``mix`` of the draws, evenly
    spaced through the pass (so about that share of every batch), are drawn from them instead, with replacement,
    each of their tasks equally often.

    Pass ``p`` depends only on ``(seed, p)`` (and the rank), and :meth:`seek` starts the next pass mid-way, so a
    resumed run draws exactly what the uninterrupted run would have. Each yielded item seed seeds the random
    transforms of that draw (:class:`SeededDataset`).

    Args:
        items: the training items (one per slice) with a ``"task"``.
        task_weights: e.g. ``{"mri": 1, "ct": 1, "pet": 1}`` (of the own items); None for plain shuffling.
        seed: seed of the draws.
        num_replicas: number of DDP processes; None when not distributed.
        rank: this process's rank, with ``num_replicas``.
        mix: share of the draws from the items with a ``"source"``, in [0, 1); 0: those items are never drawn.

    Raises:
        ValueError: no own items; a task of the items has no positive weight; ``rank`` outside
            ``[0, num_replicas)``; ``mix`` outside [0, 1).
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        task_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int = 0,
        mix: float = 0.0,
    ) -> None:
        if not 0.0 <= mix < 1.0:
            raise ValueError(f"TaskSampler: mix {mix} is not in [0, 1).")
        own = [i for i, item in enumerate(items) if not item.get("source")]
        other = [i for i, item in enumerate(items) if item.get("source")]
        if not own:
            raise ValueError("TaskSampler: there are no training items.")
        replicas = 1 if num_replicas is None else int(num_replicas)
        if not 0 <= rank < replicas:
            raise ValueError(f"rank {rank} is not in [0, {replicas}).")
        self.own = torch.as_tensor(own)
        self.weights: torch.Tensor | None = None
        if task_weights is not None:
            counts = Counter(items[i]["task"] for i in own)
            bad = [t for t in counts if not task_weights.get(t, 0) > 0]
            if bad:
                raise ValueError(f"task_weights {dict(task_weights)} give no positive weight to tasks {bad}.")
            weights = [task_weights[items[i]["task"]] / counts[items[i]["task"]] for i in own]
            self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.other = torch.as_tensor(other, dtype=torch.long)
        if other:  # each task of the other data equally often, whatever its slice count
            counts = Counter(items[i]["task"] for i in other)
            self.other_weights = torch.as_tensor([1.0 / counts[items[i]["task"]] for i in other], dtype=torch.double)
        self.num_items = len(own)
        self.num_replicas, self.rank, self.seed = replicas, int(rank), int(seed)
        self.num_own = math.ceil(self.num_items / replicas)
        self.num_other = round(self.num_own * mix / (1.0 - mix)) if other else 0
        self.num_samples = self.num_own + self.num_other
        self.pass_index, self.start = 0, 0

    def __len__(self) -> int:
        """Draws per pass for this rank (of the own items and, with ``mix``, of the others)."""
        return self.num_samples

    def seek(self, pass_index: int, position: int = 0) -> None:
        """Make the next pass pass number ``pass_index`` (from 0), starting at its ``position``-th draw.

        Args:
            pass_index: which pass comes next.
            position: how many of its draws were already used.
        """
        if pass_index < 0 or not 0 <= position <= self.num_samples:
            raise ValueError(f"cannot seek to draw {position} of pass {pass_index} ({self.num_samples} per pass).")
        self.pass_index, self.start = int(pass_index), int(position)

    def own_indices(self, pass_index: int) -> torch.Tensor:
        """This rank's own item indices of pass ``pass_index``, in order."""
        if self.weights is not None:
            draws = _generator(self.seed, pass_index, self.rank, _DRAWS)
            return self.own[torch.multinomial(self.weights, self.num_own, replacement=True, generator=draws)]
        order = torch.randperm(self.num_items, generator=_generator(self.seed, pass_index, _ORDER))
        total = self.num_own * self.num_replicas
        order = order.repeat(math.ceil(total / self.num_items))[:total]  # pad to an even split
        return self.own[order[self.rank :: self.num_replicas]]

    def indices(self, pass_index: int) -> list[int]:
        """This rank's item indices of pass ``pass_index``, in order (the other items' draws evenly spaced)."""
        own = self.own_indices(pass_index)
        if not self.num_other:
            return own.tolist()
        draws = _generator(self.seed, pass_index, self.rank, _OTHER)
        other = self.other[torch.multinomial(self.other_weights, self.num_other, replacement=True, generator=draws)]
        # the j-th other draw at position floor((j + 1/2) * total / num_other): a share mix of any stretch of draws
        spots = ((torch.arange(self.num_other) + 0.5) * self.num_samples / self.num_other).long()
        is_other = torch.zeros(self.num_samples, dtype=torch.bool)
        is_other[spots] = True
        order = torch.empty(self.num_samples, dtype=torch.long)
        order[is_other], order[~is_other] = other, own
        return order.tolist()

    def item_seeds(self, pass_index: int) -> list[int]:
        """The seeds of the random transforms of this rank's draws of pass ``pass_index``."""
        seeds = _generator(self.seed, pass_index, self.rank, _SEEDS)
        return torch.randint(0, 2**31 - 1, (self.num_samples,), generator=seeds).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """The ``(index, item seed)`` draws of the next pass (from the position of :meth:`seek`, if any)."""
        pass_index, start = self.pass_index, self.start
        self.pass_index, self.start = pass_index + 1, 0
        draws = list(zip(self.indices(pass_index), self.item_seeds(pass_index), strict=True))
        return iter(draws[start:])


class SeededDataset(Dataset):
    """A view of a MONAI dataset indexed by ``(index, seed)``: its random transforms are seeded before each item.

    So what a draw of :class:`TaskSampler` gives depends on its seed only, not on which loader worker runs it or
    what that worker drew before.

    Args:
        dataset: a MONAI ``Dataset`` (or any dataset whose ``transform`` attribute holds its random transforms).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        """Item ``index`` of the dataset, with its random transforms seeded by ``seed``.

        Args:
            key: ``(index, seed)``, as :class:`TaskSampler` yields.
        """
        index, seed = key
        transform = getattr(self.dataset, "transform", None)
        if transform is not None:
            set_rnd(transform, seed)
        return self.dataset[index]


def default_num_workers(limit: int = 4) -> int:
    """Data-loader workers this process can use: its CPUs less one for itself, shared with the other local ranks.

    Args:
        limit: at most this many.

    Returns:
        ``min(limit, cpus // local processes - 1)``, at least 0 (load in the main process).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(limit, cpus // local_processes - 1))
