"""Which SRM experts each task's tokens are routed to, and the balance loss of each task's routing.

Every pixel of an SRM's feature map is a token, routed to its top-k experts. The use of expert e by a task at one
SRM is the fraction of that task's tokens that have e among their top-k (each token counts once for each of its k
experts, so a task's fractions sum to k). Tokens of the reflect padding AMIR adds to reach a multiple of 8 are
routed like any other and are counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..networks.routing import cv_squared

__all__ = ["ExpertUse"]


class ExpertUse:
    """Accumulates, per task and SRM, the tokens routed to each expert and the gate mass each expert got.

    The balance loss of a task at an SRM is the one the SRM computes in evaluation mode (Shazeer et al., 2017),
    taken over all of the task's tokens: ``cv2(importance) + cv2(load)``, importance the summed gates of each
    expert, load the number of tokens routed to it.

    Args:
        num_experts: SRM name -> number of experts M, in the network's order.
    """

    def __init__(self, num_experts: dict[str, int]) -> None:
        self.num_experts = dict(num_experts)
        self.tokens: dict[tuple[str, str], int] = {}
        self.load: dict[tuple[str, str], np.ndarray] = {}
        self.importance: dict[tuple[str, str], np.ndarray] = {}

    @property
    def levels(self) -> list[str]:
        """The SRM names."""
        return list(self.num_experts)

    def add(self, task: str, level: str, top_idx: torch.Tensor, gates: torch.Tensor) -> None:
        """Count the tokens of one forward pass.

        Args:
            task: task of all these tokens.
            level: SRM name.
            top_idx: ``(T, k)`` experts of each token.
            gates: ``(T, k)`` their gates.
        """
        m = self.num_experts[level]
        key = (task, level)
        load = torch.bincount(top_idx.reshape(-1), minlength=m).double().numpy()
        importance = torch.zeros(m, dtype=torch.float64).index_add_(0, top_idx.reshape(-1), gates.reshape(-1).double())
        self.tokens[key] = self.tokens.get(key, 0) + int(top_idx.shape[0])
        self.load[key] = self.load.get(key, np.zeros(m)) + load
        self.importance[key] = self.importance.get(key, np.zeros(m)) + importance.numpy()

    def tasks(self, order: Sequence[str] = ()) -> list[str]:
        """Tasks seen, in ``order`` first, then in order of arrival."""
        seen = list(dict.fromkeys(t for t, _ in self.tokens))
        return [t for t in order if t in seen] + [t for t in seen if t not in order]

    def fractions(self, level: str, tasks: Sequence[str]) -> np.ndarray:
        """``(len(tasks), M)`` fraction of each task's tokens routed to each expert at ``level`` (rows sum to k)."""
        return np.stack([self.load[(t, level)] / self.tokens[(t, level)] for t in tasks])

    def balance_loss(self, task: str, level: str) -> float:
        """``cv2(importance) + cv2(load)`` of the task's tokens at ``level``."""
        importance = torch.as_tensor(self.importance[(task, level)])
        load = torch.as_tensor(self.load[(task, level)])
        return float(cv_squared(importance) + cv_squared(load))

    def rows(self, tasks: Sequence[str]) -> list[dict[str, str | int | float]]:
        """CSV rows: level, task, expert, fraction, tokens routed to it, tokens of the task."""
        rows = []
        for level in self.levels:
            table = self.fractions(level, tasks)
            for t, task in enumerate(tasks):
                for e in range(self.num_experts[level]):
                    tokens = self.tokens[(task, level)]
                    routed = int(self.load[(task, level)][e])
                    rows.append(
                        {"level": level, "task": task, "expert": e, "fraction": round(float(table[t, e]), 6),
                         "routed_tokens": routed, "task_tokens": tokens}
                    )  # fmt: skip
        return rows

    def balance_rows(self, tasks: Sequence[str]) -> list[dict[str, str | float]]:
        """CSV rows: task, one balance loss per SRM, and their sum (the network's balance loss)."""
        rows = []
        for task in tasks:
            values = {level: self.balance_loss(task, level) for level in self.levels}
            rows.append({"task": task, **{k: round(v, 6) for k, v in values.items()}, "total": sum(values.values())})
        return rows

    def markdown(self, tasks: Sequence[str]) -> str:
        """One table per SRM: a row per task, the fraction per expert and the task's balance loss there."""
        parts = []
        for level in self.levels:
            m = self.num_experts[level]
            table = self.fractions(level, tasks)
            lines = [
                f"**{level}**",
                "",
                "| task | " + " | ".join(f"expert {e}" for e in range(m)) + " | balance loss |",
                "|---|" + "---|" * (m + 1),
            ]
            for t, task in enumerate(tasks):
                cells = " | ".join(f"{v:.3f}" for v in table[t])
                lines.append(f"| {task} | {cells} | {self.balance_loss(task, level):.4f} |")
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n"
