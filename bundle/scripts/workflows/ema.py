"""An exponential moving average (EMA) of the network's weights, updated after each training step.

Later all-in-one restoration methods (e.g. TAT) train with an EMA of the weights and evaluate it. With
``ema_decay`` set, :class:`WeightEMA` keeps an averaged copy of the network, updated after every training
iteration as ``ema = decay * ema + (1 - decay) * weights``; the training config validates that copy, saves it as
the best model and keeps it in the resumable checkpoint. :class:`~scripts.workflows.AmpTrainer` updates it right
after the optimizer step (its ``ema`` argument); attached to another trainer as an Ignite handler it updates at
``ITERATION_COMPLETED``. With ``ema_decay`` null it does nothing and :attr:`WeightEMA.model` is the network
itself, so the configs read the same either way.

Under ``DistributedDataParallel`` every rank holds the same weights after each step (the gradients are
all-reduced), so every rank's average is the same without any communication.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

__all__ = ["WeightEMA"]

logger = logging.getLogger(__name__)


class WeightEMA:
    """EMA of a network's floating-point parameters (buffers are copied), updated after each trainer iteration.

    Args:
        network: the trained network, possibly wrapped in ``DistributedDataParallel``.
        decay: weight of the old average per iteration, in (0, 1), e.g. 0.999; None: no EMA.

    Raises:
        ValueError: ``decay`` outside (0, 1).
    """

    def __init__(self, network: nn.Module, decay: float | None = None) -> None:
        if decay is not None and not 0.0 < float(decay) < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {decay}.")
        self.network: nn.Module = getattr(network, "module", network)
        self.decay = None if decay is None else float(decay)
        self.num_updates = 0
        self.average: nn.Module | None = None
        self._restart = False
        if self.decay is not None:
            self.average = copy.deepcopy(self.network).requires_grad_(False).eval()

    @property
    def enabled(self) -> bool:
        """Whether an average is kept."""
        return self.average is not None

    @property
    def model(self) -> nn.Module:
        """What to validate and save as the best model: the averaged copy, or the network when EMA is off."""
        return self.average if self.average is not None else self.network

    def attach(self, engine: Engine) -> None:
        """Update the average after every iteration of ``engine`` (nothing when EMA is off).

        Args:
            engine: the trainer.
        """
        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    @torch.no_grad()
    def update(self, engine: Engine | None = None) -> None:
        """One EMA step from the network's current weights (a copy of them after a restart).

        Args:
            engine: unused (Ignite passes the engine).
        """
        if self.average is None:
            return
        if self._restart:
            self.average.load_state_dict(self.network.state_dict())
            self._restart = False
        else:
            averaged, current = [], []
            for a, p in zip(self.average.parameters(), self.network.parameters(), strict=True):
                if a.is_floating_point():
                    averaged.append(a)
                    current.append(p.detach())
            if averaged:
                torch._foreach_lerp_(averaged, current, 1.0 - self.decay)
            for a, b in zip(self.average.buffers(), self.network.buffers(), strict=True):
                a.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The decay, the number of updates and the averaged weights; empty when EMA is off."""
        if self.average is None:
            return {}
        return {"decay": self.decay, "num_updates": self.num_updates, "weights": self.average.state_dict()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the average from a checkpoint.

        A checkpoint without an average (saved with EMA off) restarts the average from the network's weights at
        the next update (so load the network first); an average in the checkpoint is ignored when EMA is off.
        """
        if self.average is None:
            if state_dict:
                logger.info("The checkpoint holds EMA weights but ema_decay is null: they are not used.")
            return
        if not state_dict:
            logger.warning("The checkpoint has no EMA weights: the average restarts from the resumed weights.")
            self._restart, self.num_updates = True, 0
            return
        self.average.load_state_dict(state_dict["weights"])
        self.num_updates = int(state_dict.get("num_updates", 0))
        self._restart = False
        if float(state_dict.get("decay", self.decay)) != self.decay:
            logger.info(f"EMA decay {state_dict['decay']} in the checkpoint; continuing with {self.decay}.")
