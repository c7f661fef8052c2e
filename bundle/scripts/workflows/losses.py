"""The AMIR training loss: L1 plus the mixture-of-experts balance loss the network leaves after each forward."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

__all__ = ["BalancedL1Loss"]


class BalancedL1Loss(_Loss):
    """``L1(pred, target) + gamma * network.balance_loss`` (AMIR's loss; gamma 0.001 in the paper).

    The network computes its balance loss inside ``forward`` (training mode only) and keeps it in
    ``balance_loss``; this loss reads it right after, so it must be called once per forward, as Ignite's
    ``SupervisedTrainer`` does. A network without ``balance_loss`` (e.g. Restormer, or any other) adds nothing.

    Args:
        network: the trained network, possibly wrapped in ``DistributedDataParallel`` / ``DataParallel``.
        gamma: weight of the balance term.
        reduction: reduction of the L1 term ("mean", "sum").
    """

    def __init__(self, network: nn.Module, gamma: float = 1e-3, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        # Kept outside the module tree: the loss must not own (or save, or move) the network's parameters.
        object.__setattr__(self, "_network", getattr(network, "module", network))
        self.gamma = gamma
        self.l1 = nn.L1Loss(reduction=reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: restored images, (N, C, H, W).
            target: high-quality images, same shape.

        Returns:
            The scalar loss.
        """
        loss = self.l1(input, target)
        balance = getattr(self._network, "balance_loss", None)
        if self.gamma and isinstance(balance, torch.Tensor):
            loss = loss + self.gamma * balance.to(loss)
        return loss
