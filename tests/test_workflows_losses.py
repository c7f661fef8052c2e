"""The AMIR loss: L1 plus gamma times the balance loss the network leaves after its forward."""

import pytest
import torch
from scripts.networks import AMIR, Restormer
from scripts.workflows import BalancedL1Loss
from torch import nn

TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}


def test_adds_the_networks_balance_loss():
    torch.manual_seed(0)
    net = AMIR(**TINY).train()
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    loss_fn = BalancedL1Loss(net, gamma=0.5)
    pred = net(x)
    assert net.balance_loss.item() > 0
    expected = nn.functional.l1_loss(pred, y) + 0.5 * net.balance_loss
    assert loss_fn(pred, y).item() == pytest.approx(expected.item())
    loss_fn(pred, y).backward()
    assert all(p.grad is not None for p in net.rin.parameters())


def test_owns_no_parameters_and_unwraps_wrappers():
    net = AMIR(**TINY)
    wrapped = nn.DataParallel(net)
    loss_fn = BalancedL1Loss(wrapped)
    assert list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}
    net.balance_loss = torch.tensor(2.0)
    pred = torch.zeros(1, 1, 4, 4)
    assert loss_fn(pred, pred).item() == pytest.approx(0.002)


def test_networks_without_balance_loss_add_nothing():
    pred, target = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert BalancedL1Loss(Restormer(**TINY))(pred, target).item() == pytest.approx(1.0)
    assert BalancedL1Loss(nn.Identity())(pred, target).item() == pytest.approx(1.0)
