"""Fine-tuning: --init_ckpt loads a checkpoint strictly, --freeze stops parts, the parent is recorded in run.json."""

from __future__ import annotations

import json

import pytest
import torch
from _workflow_data import BUNDLE, TINY_NETWORK
from scripts.errors import UserInputError
from scripts.networks import AMIR, demo_amir
from scripts.weights import file_sha256
from scripts.workflows.finetune import PARTS, fine_tune, part_parameters
from scripts.workflows.runs import RESUME_CHECKS, TrainingRun

SHIPPED = BUNDLE / "models" / "model.pt"
TINY = {k: v for k, v in TINY_NETWORK.items() if k != "_target_"}


def tiny(seed: int) -> AMIR:
    torch.manual_seed(seed)
    return AMIR(**TINY)


def test_the_shipped_weights_and_a_training_checkpoint_are_loaded_strictly(tmp_path):
    net = fine_tune(demo_amir(), SHIPPED)
    shipped = torch.load(SHIPPED, weights_only=True)
    assert all(torch.equal(value, shipped[key]) for key, value in net.state_dict().items()) and net.training
    parent = tiny(1)
    torch.save({"model": parent.state_dict(), "optimizer": {}, "iteration": 7}, tmp_path / "checkpoint_last.pt")
    loaded = fine_tune(tiny(2), tmp_path / "checkpoint_last.pt")
    assert all(torch.equal(v, parent.state_dict()[k]) for k, v in loaded.state_dict().items())
    resumed = fine_tune(tiny(2), tmp_path / "checkpoint_last.pt", resume=True)  # the run's own checkpoint wins
    assert torch.equal(resumed.output.weight, tiny(2).output.weight)
    with pytest.raises(UserInputError) as raised:
        fine_tune(tiny(2), SHIPPED)  # the demo network's weights into the tiny one
    assert str(raised.value).startswith(f"{SHIPPED}: the weights do not fit the network: ")
    assert "\n" not in str(raised.value)


def test_frozen_parts_stay_while_the_others_train():
    net = fine_tune(tiny(0), freeze=["encoder", "rin"])
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    frozen = set(part_parameters(net, "encoder")) | set(part_parameters(net, "rin"))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.rand(2, 1, 16, 16)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.l1_loss(net(x), torch.zeros_like(x)).backward()
        optimizer.step()
    changed = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
    assert frozen and not changed & frozen
    assert changed == set(before) - frozen - {k for k, v in net.named_parameters() if v.grad is None}
    assert any(k.startswith("decoder_level1") for k in changed) and any(k.startswith("latent") for k in changed)


def test_every_part_names_modules_and_an_unknown_part_lists_the_valid_ones():
    net = tiny(0)
    names = {k for k, _ in net.named_parameters()}
    covered = set().union(*(part_parameters(net, part) for part in PARTS))
    assert covered == names  # every parameter belongs to a documented part
    with pytest.raises(UserInputError, match="unknown part 'encoders'; valid: rin, encoder, latent, decoder"):
        fine_tune(net, freeze=["encoders"])


def test_the_parent_is_recorded_and_checked_on_resume(tmp_path):
    parent = tmp_path / "parent.pt"
    torch.save(tiny(0).state_dict(), parent)
    config = {"init_ckpt": "$@bundle_root + '/parent.pt'", "freeze": ["encoder"]}
    run = TrainingRun(tmp_path / "run", 10, config=config, command_line=["x"], init_ckpt=parent)
    run.prepare()
    run.lock.release()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["parent"] == {"path": str(parent), "sha256": file_sha256(parent)}
    assert record["settings"]["init_ckpt"] == str(parent) and record["settings"]["freeze"] == ["encoder"]
    assert "init_ckpt" in RESUME_CHECKS["fine-tuning"] and "freeze" in RESUME_CHECKS["fine-tuning"]
    other = TrainingRun(tmp_path / "run", 10, resume=True, config={**config, "freeze": None}, init_ckpt=parent)
    assert other.differences(record["settings"]) == {"fine-tuning": ["freeze ['encoder'] (now None)"]}
    with pytest.raises(UserInputError, match="missing.pt: --init_ckpt not found"):
        TrainingRun(tmp_path / "new", 10, config=config, init_ckpt=tmp_path / "missing.pt").check()
