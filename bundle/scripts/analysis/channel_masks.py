"""Channel routing per task: the mean CRM mask of each task, and how far apart the tasks' masks are.

A CRM scales its features per channel by ``m = sigmoid(fc(instruction))`` (in ``x + m * (gamma x + beta)``), one
mask per image. The distance between two tasks at a CRM is the root-mean-square difference of their mean masks
over the channels, ``sqrt(mean_c (m_a[c] - m_b[c])^2)``: 0 for identical masks, at most 1, and comparable
between CRMs of different widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["ChannelMasks", "mask_distance"]


def mask_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference of two masks of the same length."""
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


class ChannelMasks:
    """Accumulates the masks of every CRM per task.

    Args:
        crms: CRM names, in the network's order.
    """

    def __init__(self, crms: Sequence[str]) -> None:
        self.crms = list(crms)
        self._sum: dict[tuple[str, str], np.ndarray] = {}
        self._count: dict[tuple[str, str], int] = {}

    def add(self, task: str, crm: str, mask: torch.Tensor) -> None:
        """Add the ``(N, C)`` masks of N images of ``task`` at ``crm``."""
        key = (task, crm)
        total = mask.double().sum(0).numpy()
        self._sum[key] = self._sum.get(key, 0.0) + total
        self._count[key] = self._count.get(key, 0) + int(mask.shape[0])

    def mean(self, task: str, crm: str) -> np.ndarray:
        """The task's mean ``(C,)`` mask at ``crm``."""
        return self._sum[(task, crm)] / self._count[(task, crm)]

    def means(self, crm: str, tasks: Sequence[str]) -> np.ndarray:
        """``(len(tasks), C)`` mean masks at ``crm``."""
        return np.stack([self.mean(t, crm) for t in tasks])

    def distances(self, crm: str, tasks: Sequence[str]) -> np.ndarray:
        """``(T, T)`` symmetric matrix of :func:`mask_distance` between the tasks' mean masks at ``crm``."""
        means = self.means(crm, tasks)
        return np.array([[mask_distance(a, b) for b in means] for a in means])

    def distance_rows(self, tasks: Sequence[str]) -> list[dict[str, str | float]]:
        """CSV rows: crm, task_a, task_b, distance (each unordered pair once)."""
        rows = []
        for crm in self.crms:
            d = self.distances(crm, tasks)
            for a in range(len(tasks)):
                for b in range(a + 1, len(tasks)):
                    rows.append({"crm": crm, "task_a": tasks[a], "task_b": tasks[b], "distance": round(d[a, b], 6)})
        return rows

    def markdown(self, tasks: Sequence[str]) -> str:
        """A row per CRM: channels, the mean mask value per task and the distance of each pair of tasks."""
        pairs = [(a, b) for a in range(len(tasks)) for b in range(a + 1, len(tasks))]
        header = ["CRM", "channels"] + [f"mean mask {t}" for t in tasks]
        header += [f"distance {tasks[a]}-{tasks[b]}" for a, b in pairs]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for crm in self.crms:
            means, d = self.means(crm, tasks), self.distances(crm, tasks)
            cells = [crm, str(means.shape[1])] + [f"{m.mean():.3f}" for m in means]
            cells += [f"{d[a, b]:.4f}" for a, b in pairs]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
