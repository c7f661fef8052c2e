"""scripts.analysis.expert_use: a router forced to one expert per task gives a diagonal use table."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scripts.analysis import ExpertUse, RoutingRecorder
from scripts.networks import AMIR
from torch import nn

TASKS = ["mri", "ct", "pet"]
ATOM_DIM = 16


pytestmark = pytest.mark.usefixtures("one_thread")


class TaskCodeRIN(nn.Module):
    """An instruction that is the one-hot task code carried by the image's mean intensity ((t + 0.5) / 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot((x.mean(dim=(1, 2, 3)) * 3).long().clamp(0, 2), ATOM_DIM).float()


def forced_router(top_k: int = 1) -> nn.Module:
    """A tiny AMIR whose every SRM sends every token of task t to expert t (3 experts), whatever the features."""
    torch.manual_seed(0)
    net = AMIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, num_atoms=4, atom_dim=ATOM_DIM,
               num_experts=3, top_k=top_k)  # fmt: skip
    net.rin = TaskCodeRIN()
    with torch.no_grad():
        for srm in (net.srm_level1, net.srm_level2, net.srm_level3):
            c = srm.fc.out_features
            srm.fc.weight.zero_()
            srm.fc.bias.zero_()
            srm.fc.weight[:3, :3] = 10 * torch.eye(3)  # cond[:3] = 10 * one-hot(task)
            srm.w_gate.zero_()
            srm.w_gate[c : c + 3] = torch.eye(3)  # logits = cond[:3]: the token's own features play no part
    return net.eval()


def task_image(t: int, h: int = 16, w: int = 24) -> torch.Tensor:
    return (t + 0.5) / 3 + 0.02 * torch.randn(1, 1, h, w)


def record(net: nn.Module, images_per_task: int = 2) -> ExpertUse:
    recorder = RoutingRecorder(net)
    use = ExpertUse({name: m.num_experts for name, m in recorder.srms.items()})
    with recorder, torch.no_grad():
        for t, task in enumerate(TASKS):
            for _ in range(images_per_task):
                net(task_image(t))
                for level, (top_idx, gates) in recorder.last.experts.items():
                    use.add(task, level, top_idx, gates)
    return use


def test_forced_router_gives_diagonal_use_and_known_balance_loss():
    use = record(forced_router())
    assert use.levels == ["srm_level1", "srm_level2", "srm_level3"]
    assert use.tasks(TASKS) == TASKS
    for level in use.levels:
        np.testing.assert_array_equal(use.fractions(level, TASKS), np.eye(3))
        for task in TASKS:
            # all tokens on one of 3 experts: importance = load = (T, 0, 0), cv2 = var/mean^2 = (T^2/3)/(T/3)^2 = 3
            assert use.balance_loss(task, level) == pytest.approx(6.0)
    assert use.tokens[("ct", "srm_level1")] == 2 * 16 * 24 and use.tokens[("ct", "srm_level3")] == 2 * 4 * 6
    rows = use.rows(TASKS)
    assert len(rows) == 3 * 3 * 3
    hit = next(r for r in rows if r["level"] == "srm_level2" and r["task"] == "pet" and r["expert"] == 2)
    assert hit["fraction"] == 1.0 and hit["routed_tokens"] == hit["task_tokens"] == 2 * 8 * 12
    assert [r["total"] for r in use.balance_rows(TASKS)] == pytest.approx([18.0] * 3)
    table = use.markdown(TASKS)
    assert "| pet | 0.000 | 0.000 | 1.000 | 6.0000 |" in table


def test_top2_counts_each_token_once_per_expert():
    use = record(forced_router(top_k=2))
    for level in use.levels:
        table = use.fractions(level, TASKS)
        np.testing.assert_allclose(table.sum(1), 2.0)  # each token counts for its 2 experts
        np.testing.assert_array_equal(np.diag(table), 1.0)  # the forced expert is always among the two


def test_gate_mass_is_the_importance():
    use = ExpertUse({"srm": 4})
    top_idx = torch.tensor([[0, 1], [0, 2], [3, 0]])
    gates = torch.tensor([[0.75, 0.25], [0.5, 0.5], [0.9, 0.1]])
    use.add("ct", "srm", top_idx, gates)
    np.testing.assert_allclose(use.importance[("ct", "srm")], [1.35, 0.25, 0.5, 0.9])
    np.testing.assert_array_equal(use.load[("ct", "srm")], [3, 1, 1, 1])
    np.testing.assert_allclose(use.fractions("srm", ["ct"]), [[1.0, 1 / 3, 1 / 3, 1 / 3]])
