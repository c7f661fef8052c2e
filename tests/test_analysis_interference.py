"""scripts.analysis.interference: known answers of the task-interference table."""

import math

import numpy as np
import pytest
import torch
from scripts.analysis import interference_sets, task_interference
from scripts.networks import AMIR
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")


class TwoGains(nn.Module):
    """``x * a`` for bright images (mean > 0.5), ``x * b`` for dark ones: the two tasks share no parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x.mean(dim=(1, 2, 3)) > 0.5).view(-1, 1, 1, 1)
        return torch.where(bright, x * self.a, x * self.b)


def pairs(level: float, n: int, gain: float = 1.2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(int(level * 100))
    out = []
    for _ in range(n):
        x = level + 0.05 * torch.rand(1, 1, 16, 16)
        out.append((x, gain * x))
    return out


def test_tasks_without_shared_parameters_do_not_interfere():
    net = TwoGains()
    steps = {"bright": [pairs(0.8, 2)], "dark": [pairs(0.2, 2)]}
    evals = {"bright": pairs(0.8, 3), "dark": pairs(0.2, 3)}
    result = task_interference(net, steps, evals, step_size=1e-3)
    assert result.tasks == ["bright", "dark"]
    assert result.relative[0, 1] == 0.0 and result.relative[1, 0] == 0.0
    # the own step moves the gain 1e-3 towards 1.2: the L1 loss |(g - 1.2) x| drops by 1e-3 / 0.2 relative
    np.testing.assert_allclose(np.diag(result.relative), -1e-3 / 0.2, rtol=1e-4)
    np.testing.assert_allclose(result.normalised, [[0.0, 1.0], [1.0, 0.0]])
    assert net.a.item() == net.b.item() == 1.0  # parameters restored


def test_identical_tasks_give_symmetric_interference():
    torch.manual_seed(0)
    net = AMIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, num_atoms=4, atom_dim=16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = [(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)) for _ in range(3)]
    steps = {task: [data[:2]] for task in ("mri", "ct", "pet")}
    evals = {task: data[2:] for task in ("mri", "ct", "pet")}
    calls = []
    result = task_interference(net, steps, evals, step_size=1e-5, progress=lambda: calls.append(1))
    assert len(calls) == 3 and not net.training
    np.testing.assert_allclose(result.relative, result.relative.T, rtol=1e-6, atol=0)
    np.testing.assert_allclose(result.relative, result.relative[0, 0], rtol=1e-6)
    assert result.relative[0, 0] != 0.0  # the step did change the loss
    assert result.grad_norm[0] > 0 and np.all(result.grad_norm == result.grad_norm[0])
    if result.relative[0, 0] < 0:
        np.testing.assert_allclose(result.normalised, 0.0, atol=1e-6)
    else:
        assert np.all(np.isnan(result.normalised))
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    rows = result.rows("AMIR")
    assert len(rows) == 9 and {r["model"] for r in rows} == {"AMIR"}
    assert result.markdown().splitlines()[0] == "| step on \\ loss of | mri | ct | pet |"


def test_undefined_normalised_values_are_blank_in_rows():
    net = TwoGains()
    # the step batch asks for gain 1.2, the evaluation slices for 0.9: the own step raises the task's loss
    steps = {"bright": [pairs(0.8, 1, gain=1.2)]}
    evals = {"bright": pairs(0.8, 1, gain=0.9)}
    result = task_interference(net, steps, evals, step_size=1e-3)
    np.testing.assert_allclose(result.relative[0, 0], 1e-3 / 0.1, rtol=1e-4)
    assert math.isnan(result.normalised[0, 0])
    assert result.rows("toy")[0]["normalised"] == ""
    assert result.markdown(normalised=True).splitlines()[2] == "| bright |  |"
    with pytest.raises(ValueError, match="is 0"):  # a perfect fit: no relative change
        task_interference(net, steps, {"bright": pairs(0.8, 1, gain=1.0)})


def test_interference_sets_split_step_batches_from_evaluation():
    slices = {"mri": list(range(20)), "ct": list(range(5)), "pet": [0], "none": []}
    steps, evals = interference_sets(slices, batch_size=4, num_batches=2, eval_slices=3)
    assert steps["mri"] == [[0, 1, 2, 3], [4, 5, 6, 7]] and evals["mri"] == [8, 9, 10]
    assert steps["ct"] == [[0, 1]] and evals["ct"] == [2, 3, 4]  # too few: half and half
    assert steps["pet"] == [[0]] and evals["pet"] == [0]  # a single slice serves both
    assert "none" not in steps
    with pytest.raises(ValueError, match="at least 1"):
        interference_sets(slices, 0, 1, 1)


def test_bad_arguments():
    net = TwoGains()
    with pytest.raises(ValueError, match="differ"):
        task_interference(net, {"a": [pairs(0.8, 1)]}, {"b": pairs(0.8, 1)})
    with pytest.raises(ValueError, match="positive"):
        task_interference(net, {"a": [pairs(0.8, 1)]}, {"a": pairs(0.8, 1)}, step_size=0.0)
