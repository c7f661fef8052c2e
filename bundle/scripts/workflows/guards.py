"""Stop a training that keeps producing NaN or inf, and say where: the non-finite guard of the training config.

A non-finite loss or gradient (float16 overflow, a diverging learning rate, a bad slice) would otherwise reach
the optimizer and turn every weight into NaN, and a non-finite validation metric would be compared as a best
model. :class:`NonFiniteGuard` checks every training step and every validation, logs each non-finite result as
an error naming the task and the slice, skips the step, and stops the training after ``max_nonfinite_steps``
such steps with one clear message (:class:`NonFiniteError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from ..errors import UserInputError

__all__ = ["NonFiniteError", "NonFiniteGuard", "nonfinite_items"]


class NonFiniteError(UserInputError):
    """Training stopped: too many steps gave a non-finite loss, gradient or validation metric."""


def nonfinite_items(pred: torch.Tensor | None, batch: Any, task_key: str = "task", id_key: str = "id") -> list[str]:
    """``"task slice-id"`` of each item of a batch whose prediction holds a NaN or inf.

    Args:
        pred: batched prediction ``(N, ...)``.
        batch: the collated batch (its ``task_key`` and ``id_key`` lists name the items; indices otherwise).
        task_key: key of the items' tasks.
        id_key: key of the items' slice ids.

    Returns:
        One string per bad item, in batch order.
    """
    if not isinstance(pred, torch.Tensor) or pred.ndim == 0:
        return []
    bad = (~torch.isfinite(pred.detach().reshape(pred.shape[0], -1)).all(dim=1)).nonzero().flatten().tolist()
    batch = batch if isinstance(batch, Mapping) else {}

    def name(index: int, key: str) -> str:
        values = batch.get(key)
        return str(values[index]) if isinstance(values, Sequence) and index < len(values) else f"#{index}"

    return [f"{name(i, task_key)} slice {name(i, id_key)}" for i in bad]


class NonFiniteGuard:
    """Ignite handler of the trainer (and, through it, the evaluator) refusing non-finite results.

    Training: after each backward pass, a non-finite loss, or non-finite gradients (checked only when no float16
    gradient scaler is on: the scaler skips those steps itself, and its early overflows are expected), is logged
    as an error naming the iteration and the task and slice of each non-finite prediction, and the optimizer step
    is skipped (the gradients are cleared). Under ``DistributedDataParallel`` the ranks agree (the decision is
    all-reduced).

    Validation (with ``evaluator``): each non-finite prediction is logged with its task and slice, and a
    validation whose metrics are not all finite is logged as an error (the best checkpoint never counts it).

    Each such training step or validation counts; after more than ``max_nonfinite_steps`` the training stops with
    :class:`NonFiniteError`.

    Args:
        max_nonfinite_steps: how many non-finite steps (and validations) are tolerated.
        evaluator: the validation engine to watch as well.
        task_key: batch key of the tasks.
        id_key: batch key of the slice ids.
    """

    def __init__(
        self, max_nonfinite_steps: int = 10, evaluator: Engine | None = None, task_key: str = "task", id_key: str = "id"
    ) -> None:
        if max_nonfinite_steps < 0:
            raise ValueError(f"max_nonfinite_steps must be >= 0, got {max_nonfinite_steps}.")
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.evaluator = evaluator
        self.task_key, self.id_key = task_key, id_key
        self.count = 0
        self.last = ""
        self._trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Check ``engine``'s steps (after the backward pass) and the evaluator's predictions and metrics.

        Args:
            engine: the trainer (an :class:`~scripts.workflows.AmpTrainer` or MONAI ``SupervisedTrainer``).
        """
        self._trainer = engine
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.check_step)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.check_predictions)
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.check_metrics)

    @staticmethod
    def _scaling(engine: Engine) -> bool:
        scaler = getattr(engine, "grad_scaler", None) or getattr(engine, "scaler", None)
        return scaler is not None and scaler.is_enabled()

    def check_step(self, engine: Engine) -> None:
        """Skip and log the step if its loss (or, without gradient scaling, its gradients) is not finite."""
        output = engine.state.output
        loss = output[Keys.LOSS].detach()
        flags = [~torch.isfinite(loss).all()]
        scaling = self._scaling(engine)
        if not scaling:
            grads = [p.grad for p in engine.network.parameters() if p.grad is not None]
            if grads:
                flags.append(~torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        bad = torch.stack(flags).any().to(torch.int32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if not bad.item():
            return
        # without gradients the optimizer skips every parameter (AmpTrainer then skips the scaler's step too)
        engine.optimizer.zero_grad(set_to_none=True)
        items = nonfinite_items(output.get(Keys.PRED), engine.state.batch, self.task_key, self.id_key)
        where = f"non-finite predictions for {', '.join(items)}" if items else "the predictions are finite"
        self._count(
            engine,
            f"training iteration {engine.state.iteration}: non-finite loss {loss.float().mean().item()} or gradients "
            f"({where}); the step is skipped",
        )

    def check_predictions(self, engine: Engine) -> None:
        """Log every validation slice whose prediction is not finite."""
        items = nonfinite_items(engine.state.output.get(Keys.PRED), engine.state.batch, self.task_key, self.id_key)
        for item in items:
            engine.logger.error(f"validation{self._at()}: non-finite prediction (NaN or inf) for {item}")

    def check_metrics(self, engine: Engine) -> None:
        """Count a validation whose metrics are not all finite (they are gathered, so every rank agrees)."""
        bad = {k: v for k, v in engine.state.metrics.items() if isinstance(v, (int, float)) and not math.isfinite(v)}
        if bad:
            names = sorted(bad)
            shown = ", ".join(f"{k} {bad[k]}" for k in names[:3])
            if len(names) > 3:
                shown += f" and {len(names) - 3} more"
            self._count(engine, f"validation{self._at()}: non-finite metrics ({shown}); not a best model")

    def _at(self) -> str:
        return f" after iteration {self._trainer.state.iteration}" if self._trainer is not None else ""

    def _count(self, engine: Engine, message: str) -> None:
        self.count += 1
        self.last = message
        engine.logger.error(f"{message} [{self.count} of at most {self.max_nonfinite_steps}]")
        if self.count > self.max_nonfinite_steps:
            raise NonFiniteError(
                f"training stopped: {self.count} steps gave non-finite (NaN or inf) results, more than "
                f"max_nonfinite_steps {self.max_nonfinite_steps}; the last: {message}. Lower the learning rate, use "
                "--amp_dtype bfloat16 or --amp false, or check the slices named in the log."
            )
