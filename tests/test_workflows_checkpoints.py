"""Kill-safe checkpoints: atomic writes, resuming the whole training state, best-model saving."""

import logging
import math

import pytest
import torch
from ignite.engine import Engine, Events
from scripts.workflows import BestCheckpoint, ResumableCheckpoint, save_atomic
from torch import nn


def test_save_atomic_keeps_the_previous_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left


def make_training(tmp_path, resume: bool, max_epochs: int, epoch_length: int = 3):
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs * epoch_length)

    def step(engine, batch):
        optimizer.zero_grad()
        net(batch).sum().backward()
        optimizer.step()
        scheduler.step()

    trainer = Engine(step)
    trainer.logger.setLevel(logging.WARNING)
    best = BestCheckpoint(tmp_path, net)
    handler = ResumableCheckpoint(
        tmp_path, {"model": net, "optimizer": optimizer, "lr_scheduler": scheduler, "best": best}, resume=resume
    )
    handler.attach(trainer)
    data = [torch.ones(1, 2)] * epoch_length
    return trainer, net, optimizer, scheduler, best, data


def test_resume_restores_model_optimizer_scheduler_and_iteration(tmp_path):
    # reference: 4 epochs in one go
    trainer, net, optimizer, scheduler, _, data = make_training(tmp_path / "ref", False, 4)
    trainer.run(data, max_epochs=4)
    reference = net.weight.detach().clone()

    # killed after 2 epochs (and while writing a later checkpoint), resumed to 4
    trainer, _, _, _, best, data = make_training(tmp_path / "run", False, 4)
    best.best_metric = 12.5
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    trainer.run(data, max_epochs=4)
    assert trainer.state.iteration == 6
    stale = tmp_path / "run" / ".checkpoint_last.pt.abc.tmp"
    stale.write_bytes(b"partial")
    trainer, net, optimizer, scheduler, best, data = make_training(tmp_path / "run", True, 4)
    iterations = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    trainer.run(data, max_epochs=4)
    assert iterations == [7, 8, 9, 10, 11, 12]
    assert torch.allclose(net.weight, reference)
    assert scheduler.last_epoch == 12
    assert best.best_metric == 12.5
    saved = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 12
    assert not stale.exists()


def test_resume_without_checkpoint_starts_from_scratch(tmp_path, caplog):
    trainer, *_, data = make_training(tmp_path, True, 1)
    with caplog.at_level(logging.WARNING):
        trainer.run(data, max_epochs=1)
    assert "training starts from scratch" in caplog.text
    assert trainer.state.iteration == 3
    assert (tmp_path / "checkpoint_last.pt").is_file()


def test_reserved_key_and_interval_are_checked(tmp_path):
    with pytest.raises(ValueError, match="trainer"):
        ResumableCheckpoint(tmp_path, {"trainer": nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="save_interval"):
        ResumableCheckpoint(tmp_path, {}, save_interval=0)


def test_best_checkpoint_saves_on_improvement_only(tmp_path):
    net = nn.Linear(1, 1)
    best = BestCheckpoint(tmp_path, net, metric_name="psnr")
    evaluator = Engine(lambda e, b: None)
    values = iter([20.0, 19.0, math.nan, 21.0])

    @evaluator.on(Events.EPOCH_COMPLETED)  # before the saver, as metrics are
    def set_metric(engine):
        engine.state.metrics["psnr"] = next(values)

    best.attach(evaluator)
    saved = []
    for epoch in range(4):
        with torch.no_grad():
            net.weight.fill_(epoch)
        evaluator.run([0], max_epochs=1)
        saved.append(torch.load(tmp_path / "model.pt", weights_only=True)["weight"].item())
    assert saved == [0.0, 0.0, 0.0, 3.0]
    assert best.state_dict()["best_metric"] == 21.0
