"""Task interference: how a small gradient step on one task's batch changes the loss of every task.

For tasks i (the step) and j (the loss), with ``L_j`` the mean L1 restoration loss (the training loss without its
balance term) over a fixed evaluation set of task j, and ``g_i`` the gradient of ``L_i`` on one batch of task i
with respect to all parameters of the network (AMIR has no task-specific parameters: every parameter is shared,
and routing decides which experts a task's tokens reach):

    theta' = theta - lr * g_i / ||g_i||
    relative[i, j] = (L_j(theta') - L_j(theta)) / L_j(theta)

averaged over the step batches of task i. Negative: the step on i lowers j's loss (transfer); positive: it raises it
(interference). The step is normalised, so every task moves the parameters by the same distance ``lr``, as in
Uni-Perceiver-MoE (Zhu et al., NeurIPS 2022). That paper reports ``1 - dL_j(step on i) / dL_j(step on j)``
(with ``dL`` the decrease of the loss), i.e. the change due to another task relative to the change due to the task
itself; it is given here as ``normalised[i, j]`` (0 on the diagonal by construction, 0 elsewhere when i helps j as
much as j itself, above 1 when i raises j's loss), left empty where j's own step does not lower its loss.

The network runs in evaluation mode throughout (no gate noise), so the result is deterministic; the parameters
are restored exactly after every step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["Pair", "InterferenceResult", "task_interference", "interference_sets"]

logger = logging.getLogger(__name__)

#: One slice: ``(image, label)``, each ``(1, C, H, W)`` on the network's device.
Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class InterferenceResult:
    """Losses before and after the steps, and the two interference tables.

    Attributes:
        tasks: row (step) and column (loss) order.
        loss: ``(T,)`` evaluation loss of each task before any step.
        loss_after: ``(T, T)`` mean loss of task j after a step on task i (row i, column j).
        relative: ``(T, T)`` mean relative change of task j's loss after a step on task i.
        normalised: ``(T, T)`` Uni-Perceiver-MoE's ``1 - dL_j(i) / dL_j(j)``; NaN where ``dL_j(j) <= 0``.
        grad_norm: ``(T,)`` mean gradient norm of each task's step batches.
        step_size: the step length ``lr``.
        num_batches: step batches per task.
    """

    tasks: list[str]
    loss: np.ndarray
    loss_after: np.ndarray
    relative: np.ndarray
    normalised: np.ndarray
    grad_norm: np.ndarray
    step_size: float
    num_batches: int

    def rows(self, model: str) -> list[dict[str, str | float]]:
        """CSV rows: model, step_task, loss_task, loss before and after, relative change, normalised (or empty)."""
        rows = []
        for i, step_task in enumerate(self.tasks):
            for j, loss_task in enumerate(self.tasks):
                normalised = self.normalised[i, j]
                rows.append(
                    {"model": model, "step_task": step_task, "loss_task": loss_task,
                     "loss_before": float(self.loss[j]), "loss_after": float(self.loss_after[i, j]),
                     "relative_change": float(self.relative[i, j]),
                     "normalised": "" if math.isnan(normalised) else float(normalised)}
                )  # fmt: skip
        return rows

    def markdown(self, normalised: bool = False) -> str:
        """A table with a row per stepped task and a column per task whose loss changes.

        Args:
            normalised: show the Uni-Perceiver-MoE form (blank where undefined) instead of the relative change.
        """
        values = self.normalised if normalised else self.relative
        lines = ["| step on \\ loss of | " + " | ".join(self.tasks) + " |", "|---|" + "---|" * len(self.tasks)]
        for i, task in enumerate(self.tasks):
            cells = ["" if math.isnan(v) else (f"{v:.2f}" if normalised else f"{v:+.3e}") for v in values[i]]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _same_shape_groups(pairs: Sequence[Pair]) -> list[Pair]:
    """The slices stacked into one batch per image shape (slices of one task usually share theirs)."""
    groups: dict[tuple[int, ...], list[Pair]] = {}
    for x, y in pairs:
        groups.setdefault(tuple(x.shape), []).append((x, y))
    return [(torch.cat([x for x, _ in g]), torch.cat([y for _, y in g])) for g in groups.values()]


def _slice_losses(network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mean absolute error of each slice."""
    return (network(x) - y).abs().flatten(1).mean(1)


def _loss(network: nn.Module, pairs: Sequence[Pair]) -> float:
    """Mean over slices of the mean absolute error, summed in float64."""
    with torch.no_grad():
        total = sum(float(_slice_losses(network, x, y).double().sum()) for x, y in _same_shape_groups(pairs))
    return total / len(pairs)


def _gradient(network: nn.Module, params: Sequence[nn.Parameter], batch: Sequence[Pair]) -> list[torch.Tensor]:
    """Gradient of the batch's loss, the mean over its slices of their mean absolute error.

    One backward per slice (gradients accumulate): a stacked batch would hold every slice's activations at once.
    """
    for p in params:
        p.grad = None
    with torch.enable_grad():
        for x, y in batch:
            (_slice_losses(network, x, y).sum() / len(batch)).backward()
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    return grads


def task_interference(
    network: nn.Module,
    step_batches: Mapping[str, Sequence[Sequence[Pair]]],
    eval_sets: Mapping[str, Sequence[Pair]],
    step_size: float = 1e-5,
    progress: Callable[[], None] | None = None,
) -> InterferenceResult:
    """Measure the interference table of ``network`` (see the module's docstring for the definition).

    Args:
        network: the network; it is put in eval mode and its parameters are left as they were.
        step_batches: task -> its step batches (each a sequence of slices).
        eval_sets: task -> the slices its loss is measured on; same tasks as ``step_batches``.
        step_size: length ``lr`` of the normalised step in parameter space.
        progress: called after each step (a progress bar's update).

    Returns:
        The :class:`InterferenceResult`.

    Raises:
        ValueError: tasks differ between the two mappings, a task has no batch or no evaluation slice,
            ``step_size`` is not positive, or a task's loss is 0 (nothing to change relative to).
    """
    tasks = list(step_batches)
    if set(tasks) != set(eval_sets):
        raise ValueError(f"step_batches tasks {tasks} and eval_sets tasks {list(eval_sets)} differ")
    if not all(step_batches[t] and all(step_batches[t]) for t in tasks) or not all(eval_sets[t] for t in tasks):
        raise ValueError("every task needs at least one non-empty step batch and one evaluation slice")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    network.eval()
    params = [p for p in network.parameters() if p.requires_grad]
    base = np.array([_loss(network, eval_sets[t]) for t in tasks])
    if np.any(base <= 0):
        zero = [t for t, v in zip(tasks, base, strict=True) if v <= 0]
        raise ValueError(f"the loss of {zero} is 0 on their evaluation slices: a relative change is undefined")
    n = len(tasks)
    after = np.zeros((n, n))
    relative = np.zeros((n, n))
    grad_norm = np.zeros(n)
    num_batches = min(len(step_batches[t]) for t in tasks)
    for i, task in enumerate(tasks):
        batches = step_batches[task][:num_batches]
        for batch in batches:
            grads = _gradient(network, params, batch)
            norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
            grad_norm[i] += norm / len(batches)
            if norm == 0.0:
                logger.warning(f"task interference: zero gradient on a {task} batch; its step changes nothing.")
                after[i] += base / len(batches)
            else:
                saved = [p.detach().clone() for p in params]
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        p.sub_(g, alpha=step_size / norm)
                losses = np.array([_loss(network, eval_sets[t]) for t in tasks])
                with torch.no_grad():
                    for p, s in zip(params, saved, strict=True):
                        p.copy_(s)
                after[i] += losses / len(batches)
                relative[i] += (losses - base) / base / len(batches)
            if progress is not None:
                progress()
    decrease = base[None, :] - after  # decrease[i, j]: how much a step on i lowers j's loss
    own = np.diag(decrease)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(own[None, :] > 0, 1.0 - decrease / own[None, :], np.nan)
    return InterferenceResult(tasks, base, after, relative, normalised, grad_norm, float(step_size), num_batches)


def interference_sets(
    slices: Mapping[str, Sequence[Pair]], batch_size: int, num_batches: int, eval_slices: int
) -> tuple[dict[str, list[list[Pair]]], dict[str, list[Pair]]]:
    """Cut each task's slices into step batches and an evaluation set that does not overlap them.

    The first ``num_batches * batch_size`` slices of a task make its step batches and up to ``eval_slices`` of the
    following ones its evaluation set. A task with no more slices than that gives its first half (at least one) to
    the step batches and the rest to evaluation; a task with a single slice uses it for both.

    Args:
        slices: task -> its slices, in order.
        batch_size: slices per step batch.
        num_batches: step batches per task.
        eval_slices: the most evaluation slices per task.

    Returns:
        ``(step_batches, eval_sets)`` for :func:`task_interference`; tasks without slices are left out.
    """
    if batch_size < 1 or num_batches < 1 or eval_slices < 1:
        raise ValueError("batch_size, num_batches and eval_slices must be at least 1")
    steps: dict[str, list[list[Pair]]] = {}
    evals: dict[str, list[Pair]] = {}
    want = num_batches * batch_size
    for task, pairs in slices.items():
        pairs = list(pairs)
        if not pairs:
            continue
        n_step = want if len(pairs) > want else max(1, len(pairs) // 2)
        step_part = pairs[:n_step]
        evals[task] = pairs[n_step : n_step + eval_slices] or pairs[-1:]
        steps[task] = [step_part[k : k + batch_size] for k in range(0, n_step, batch_size)]
    return steps, evals
