"""The iteration schedule: a shorter last validation interval, the data position after a resume, logging, progress."""

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.handlers import StatsHandler
from scripts.errors import UserInputError
from scripts.workflows import (
    IterationLog,
    IterationSchedule,
    LogSchedule,
    SeededDataset,
    TaskSampler,
    TrainingProgress,
    handlers_for_rank,
    num_epochs,
)
from torch.utils.data import DataLoader


def test_num_epochs_rounds_up():
    assert num_epochs(200000, 1000) == 200
    assert num_epochs(20, 1000) == 1
    assert num_epochs(2500, 1000) == 3
    with pytest.raises(UserInputError, match=">= 1"):
        num_epochs(0, 4)


def run_schedule(num_iterations: int, epoch_length: int, start: int = 0, loader: DataLoader | None = None):
    """Run an engine through IterationSchedule; return its iterations, epoch ends and batches."""
    trainer = Engine(lambda engine, batch: batch)
    trainer.logger.setLevel(logging.WARNING)
    seen = {"iterations": [], "epoch_ends": [], "batches": []}
    if start:
        trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "iteration", start))  # as a resume does
    IterationSchedule(num_iterations, loader).attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen["iterations"].append(e.state.iteration))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen["batches"].append(e.state.output))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen["epoch_ends"].append(e.state.iteration))
    data = loader if loader is not None else range(100)
    trainer.run(data, max_epochs=num_epochs(num_iterations, epoch_length), epoch_length=epoch_length)
    return seen


def test_the_last_validation_interval_is_shorter():
    seen = run_schedule(5, 2)
    assert seen["iterations"] == [1, 2, 3, 4, 5]
    assert seen["epoch_ends"] == [2, 4, 5]  # validation and checkpoint after the short last interval too
    assert run_schedule(3, 1000)["epoch_ends"] == [3]
    assert run_schedule(4, 2)["epoch_ends"] == [2, 4]


def test_a_resumed_run_draws_the_batches_the_uninterrupted_one_would():
    items = [{"task": "mri"}] * 7  # 3 batches of 2 per pass, one item dropped

    def loader():
        dataset = SeededDataset(Dataset(list(range(7))))
        return DataLoader(dataset, batch_size=2, sampler=TaskSampler(items, seed=0), drop_last=True)

    def indices(batches):
        return [batch.tolist() for batch in batches]

    whole = run_schedule(10, 2, loader=loader())
    resumed = run_schedule(10, 2, start=4, loader=loader())  # iteration 4: pass 1, second batch
    assert resumed["iterations"] == list(range(5, 11))
    assert indices(resumed["batches"]) == indices(whole["batches"][4:])


def test_nothing_left_to_train_and_no_full_batch_are_user_errors():
    with pytest.raises(UserInputError, match="larger --num_iterations"):
        run_schedule(4, 2, start=4)
    empty = DataLoader(list(range(3)), batch_size=4, sampler=TaskSampler([{"task": "ct"}] * 3), drop_last=True)
    with pytest.raises(UserInputError, match="fewer than batch_size 4"):
        IterationSchedule(10, empty)


def test_log_schedule_logs_the_first_iterations_then_every_interval():
    log = LogSchedule(100, num_iterations=250)
    assert [i for i in range(1, 251) if log(None, i)] == [1, 2, 4, 8, 16, 32, 64, 100, 200, 250]


def test_iteration_log_and_progress_count_iterations_not_epochs(caplog, capsys):
    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(0.25)}])  # MONAI's decollated output
    printer = IterationLog(5, name="test.iterations")  # MONAI's StatsHandler logger does not propagate to caplog
    StatsHandler(iteration_log=LogSchedule(2), iteration_print_logger=printer, tag_name="train_loss").attach(trainer)
    progress = TrainingProgress(5, mininterval=0)
    progress.attach(trainer)
    IterationSchedule(5).attach(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run(range(10), max_epochs=3, epoch_length=2)
    assert "iteration 1/5 -- train_loss: 0.2500" in caplog.text
    assert "iteration 4/5 -- train_loss: 0.2500" in caplog.text
    assert "Epoch:" not in caplog.text
    bar = capsys.readouterr().err
    assert "5/5" in bar and "loss 0.25" in bar and "Epoch" not in bar
    assert progress.bar is None  # closed at the end


def test_log_and_progress_count_to_the_trainers_end_when_max_epochs_is_set(caplog, capsys):
    """MONAI Label sets ``train#trainer#max_epochs``: 2 Label epochs of 2 iterations end at 4, not 200,000."""
    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(0.5)}])
    printer = IterationLog(200000, name="test.label_epochs")
    log = LogSchedule(100, num_iterations=200000)
    StatsHandler(iteration_log=log, iteration_print_logger=printer, tag_name="train_loss").attach(trainer)
    TrainingProgress(200000, mininterval=0).attach(trainer)
    IterationSchedule(200000).attach(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run(range(10), max_epochs=2, epoch_length=2)
    assert trainer.state.iteration == 4
    assert "iteration 4/4 -- train_loss: 0.5000" in caplog.text  # the last iteration is logged, out of 4
    assert "200000" not in caplog.text
    bar = capsys.readouterr().err
    assert "4/4" in bar and "200000" not in bar


def test_reporting_handlers_run_on_rank_0_only():
    stats, progress, schedule = StatsHandler(), TrainingProgress(5), IterationSchedule(5)
    handlers = [schedule, stats, progress]
    assert handlers_for_rank(handlers, 0) == handlers
    assert handlers_for_rank(handlers, 1) == [schedule]
