"""Kill-safe checkpoints: atomic 0644 writes, resuming the whole training state (random states included), extending
the schedule without a jump in the learning rate, best-model saving."""

import errno
import logging
import math
import os
import random
import stat

import numpy as np
import pytest
import torch
from _workflow_data import dead_pid
from ignite.engine import Engine, Events
from scripts.atomic import TEMP_TAG, DiskFullError, temporary_name
from scripts.errors import UserInputError
from scripts.workflows import (
    BestCheckpoint,
    ResumableCheckpoint,
    rng_state,
    save_atomic,
    saved_iteration,
    set_rng_state,
)
from scripts.workflows import checkpoints as checkpoints_module
from torch import nn


def test_save_atomic_keeps_the_previous_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"a": torch.ones(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable like the images, not mkstemp's 0600

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_rng_state_round_trip():
    state = rng_state()
    drawn = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(drawn[0], again[0]) and np.array_equal(drawn[1], again[1]) and drawn[2] == again[2]


def make_training(tmp_path, resume: bool, num_iterations: int, epoch_length: int = 3, eta_min: float = 0.0, seed=0):
    """A tiny trainer with randomness in each step (as AMIR's noisy routing), the way train.json builds one."""
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_iterations, eta_min=eta_min)

    def step(engine, batch):
        optimizer.zero_grad()
        noise = torch.randn(1) + float(np.random.rand()) + random.random()  # noqa: NPY002
        (net(batch).sum() * noise).sum().backward()
        optimizer.step()
        scheduler.step()
        return optimizer.param_groups[0]["lr"]

    trainer = Engine(step)
    trainer.logger.setLevel(logging.WARNING)
    best = BestCheckpoint(tmp_path, net)
    handler = ResumableCheckpoint(
        tmp_path, {"model": net, "optimizer": optimizer, "lr_scheduler": scheduler, "best": best}, resume=resume
    )
    handler.attach(trainer)
    data = [torch.ones(1, 2)] * epoch_length
    return trainer, net, scheduler, best, data


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    # reference: 12 iterations in one go
    trainer, net, *_, data = make_training(tmp_path / "ref", False, 12)
    trainer.run(data, max_epochs=4)
    reference = net.weight.detach().clone()

    # stopped after 2 epochs, with temporary files of interrupted writes left behind; resumed to the end
    trainer, _, _, best, data = make_training(tmp_path / "run", False, 12)
    best.best_metric = 12.5
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    trainer.run(data, max_epochs=4)
    assert trainer.state.iteration == 6
    stale = [
        tmp_path / "run" / f"{temporary_name('checkpoint_last.pt', dead_pid())}abc12345.pt",
        tmp_path / "run" / f"{temporary_name('model.pt', dead_pid())}x.pt",
    ]
    for path in stale:
        path.write_bytes(b"partial")
    mine = tmp_path / "run" / ".notes.tmp"  # not the bundle's temporary name: kept
    mine.write_text("user file")
    # another process: other random states, until the checkpoint's are restored
    trainer, net, scheduler, best, data = make_training(tmp_path / "run", True, 12, seed=123)
    iterations = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    trainer.run(data, max_epochs=4)
    assert iterations == [7, 8, 9, 10, 11, 12]
    assert torch.equal(net.weight, reference)  # bitwise: the noise was drawn from the restored random states
    assert scheduler.last_epoch == 12
    assert best.best_metric == 12.5
    assert saved_iteration(tmp_path / "run" / "checkpoint_last.pt") == 12
    assert not any(path.exists() for path in stale) and mine.exists()


def test_extending_a_run_continues_the_learning_rate_down_to_its_minimum(tmp_path):
    eta_min = 1e-4
    trainer, *_, data = make_training(tmp_path, False, 6, epoch_length=2, eta_min=eta_min)
    before = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: before.append(e.state.output))
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    trainer.run(data, max_epochs=3)
    assert len(before) == 4

    # resumed with 20 iterations instead of 6: the stored T_max (6) must not come back
    trainer, _, scheduler, _, data = make_training(tmp_path, True, 20, epoch_length=2, eta_min=eta_min)
    after = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: after.append(e.state.output))
    trainer.run(data, max_epochs=10)
    assert scheduler.T_max == 20 and len(after) == 16
    lrs = np.array(before + after)
    steps = np.diff(lrs)
    assert np.all(steps <= 0)  # never climbs back
    assert -steps[len(before) - 1] <= -steps[: len(before) - 1].min()  # no jump at the resume
    assert lrs[-1] == pytest.approx(eta_min, rel=1e-9)
    # without the fix the stored T_max makes the cosine climb after iteration 6
    optimizer = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1)
    old, old_lrs = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 6), []
    for _ in range(10):
        optimizer.step()
        old.step()
        old_lrs.append(old.get_last_lr()[0])
    assert max(old_lrs[6:]) > old_lrs[5]


def test_the_new_validation_interval_wins_over_the_checkpoints(tmp_path):
    trainer, *_, data = make_training(tmp_path, False, 12, epoch_length=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    trainer.run(data, max_epochs=4)  # checkpoint at iteration 6, epoch length 3

    trainer, *_ = make_training(tmp_path, True, 12, epoch_length=4)
    ends = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: ends.append(e.state.iteration))
    trainer.run([torch.ones(1, 2)] * 4, max_epochs=3)
    assert trainer.state.epoch_length == 4
    assert ends == [8, 12]  # epochs end at multiples of the new interval


def test_resume_without_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    trainer, *_, data = make_training(tmp_path, True, 3)
    with pytest.raises(UserInputError, match=r"checkpoint_last.pt: missing, .*--overwrite true"):
        trainer.run(data, max_epochs=1)
    assert trainer.state.iteration == 0 and list(tmp_path.iterdir()) == []


class FullDisk:
    """A file on a disk that is full: every write fails as the kernel reports it (``ENOSPC``)."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.file.close()


def test_a_full_disk_stops_training_in_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    trainer, *_, data = make_training(tmp_path, False, 9)
    opened = []

    def open_on_a_disk_that_fills(path, mode="r", *args, **kwargs):  # the first checkpoint fits, the next does not
        opened.append(path)
        file = open(path, mode, *args, **kwargs)
        return FullDisk(file) if len(opened) > 1 else file

    monkeypatch.setattr(checkpoints_module, "open", open_on_a_disk_that_fills, raising=False)
    with pytest.raises(DiskFullError) as raised:  # torch.save reports the write as a RuntimeError, errno in context
        trainer.run(data, max_epochs=3)
    last = tmp_path / "checkpoint_last.pt"
    assert str(raised.value) == (
        f"{tmp_path}: the disk is full (No space left on device): training stopped at iteration 6; its last "
        f"checkpoint, {last} (iteration 3), is intact. Free space there, then run the same command with --resume true."
    )
    assert saved_iteration(last) == 3 and not list(tmp_path.glob(f"*{TEMP_TAG}*"))


def test_other_errors_pass_through_unchanged(tmp_path):
    trainer, *_, data = make_training(tmp_path, False, 3)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        trainer.run(data, max_epochs=1)


def test_reserved_keys_and_interval_are_checked(tmp_path):
    for key in ("trainer", "rng"):
        with pytest.raises(ValueError, match=key):
            ResumableCheckpoint(tmp_path, {key: nn.Linear(1, 1)})
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
    assert stat.S_IMODE((tmp_path / "model.pt").stat().st_mode) == 0o644


def test_best_checkpoint_never_replaces_a_model_the_run_did_not_start_from(tmp_path):
    earlier = tmp_path / "model.pt"
    earlier.write_bytes(b"an earlier run's best")
    best = BestCheckpoint(tmp_path, nn.Linear(1, 1), metric_name="psnr")

    def validate():
        evaluator = Engine(lambda e, b: None)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(psnr=30.0))
        best.attach(evaluator)
        evaluator.run([0], max_epochs=1)

    with pytest.raises(UserInputError, match=r"model.pt: exists and this training did not start from it"):
        validate()
    assert earlier.read_bytes() == b"an earlier run's best"
    best.load_state_dict({"best_metric": 25.0, "best_epoch": 2})  # a resume: the run's own state
    validate()
    assert set(torch.load(earlier, weights_only=True)) == {"weight", "bias"}
