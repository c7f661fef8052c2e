"""How the training workflow draws its data: iteration counts, per-task weights, validation subsets."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import DistributedSampler
from torch.utils.data import Sampler, WeightedRandomSampler

from ..data.slices import limit_per_task

__all__ = ["num_epochs", "limit_per_task", "task_sampler"]


def num_epochs(num_iterations: int, epoch_length: int) -> int:
    """Ignite epochs that make ``num_iterations`` iterations of ``epoch_length`` each.

    The training workflow calls every ``val_interval`` iterations an epoch (validation and checkpoint at its end).

    Args:
        num_iterations: total training iterations.
        epoch_length: iterations per epoch (``val_interval``).

    Returns:
        ``num_iterations // epoch_length``.

    Raises:
        ValueError: non-positive values, or ``num_iterations`` not a multiple of ``epoch_length``.
    """
    if num_iterations < 1 or epoch_length < 1:
        raise ValueError(f"num_iterations ({num_iterations}) and val_interval ({epoch_length}) must be >= 1.")
    if num_iterations % epoch_length:
        raise ValueError(
            f"num_iterations ({num_iterations}) must be a multiple of val_interval ({epoch_length}): training "
            "runs whole validation intervals."
        )
    return num_iterations // epoch_length


def task_sampler(
    items: Sequence[Mapping[str, Any]],
    task_weights: Mapping[str, float] | None,
    seed: int = 0,
    num_replicas: int | None = None,
    rank: int = 0,
) -> Sampler | None:
    """A sampler drawing tasks in the given proportions, or None for plain shuffling (the released code's pooling).

    Without weights every slice is equally likely, so the task with most slices dominates the batches. With
    ``task_weights`` a task's share of the draws is proportional to its weight whatever its slice count.

    Under ``DistributedDataParallel`` (``num_replicas`` given) each rank draws its share of a pass: without weights
    a shuffling ``DistributedSampler`` (disjoint slices per rank); with weights independent weighted draws seeded
    per rank, which is the same distribution as one weighted sampler, since draws are with replacement.

    Args:
        items: the training items (one per slice) with a ``"task"``.
        task_weights: e.g. ``{"mri": 1, "ct": 1, "pet": 1}``; None for plain shuffling.
        seed: seed of the sampler's generator.
        num_replicas: number of DDP processes; None when not distributed.
        rank: this process's rank, with ``num_replicas``.

    Returns:
        A ``WeightedRandomSampler`` (with replacement, ``ceil(len(items) / num_replicas)`` draws per pass), a
        ``DistributedSampler``, or None.

    Raises:
        ValueError: a task of the items has no positive weight; ``rank`` outside ``[0, num_replicas)``.
    """
    if num_replicas is not None and not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not in [0, {num_replicas}).")
    if task_weights is None:
        if num_replicas is None:
            return None
        return DistributedSampler(items, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
    counts = Counter(item["task"] for item in items)
    bad = [t for t in counts if not task_weights.get(t, 0) > 0]
    if bad:
        raise ValueError(f"task_weights {dict(task_weights)} give no positive weight to tasks {bad}.")
    weights = [task_weights[item["task"]] / counts[item["task"]] for item in items]
    generator = torch.Generator().manual_seed(seed + rank)
    num_samples = math.ceil(len(items) / (num_replicas or 1))
    return WeightedRandomSampler(weights, num_samples=num_samples, replacement=True, generator=generator)
