"""The iteration schedule of a training run: validation intervals, a shorter last interval, logging and progress.

The training workflow counts iterations. An Ignite epoch is one validation interval (``val_interval``
iterations; validation and checkpoint at its end), and :class:`IterationSchedule` ends the run after exactly
``num_iterations``, so that the last interval is shorter when ``num_iterations`` is not a multiple of
``val_interval``; it also starts the data where the iteration count says, after a resume.

The run's real end is the earlier of ``num_iterations`` and the trainer's ``max_epochs`` x ``val_interval``
(:func:`run_end`): MONAI Label sets ``train#trainer#max_epochs`` to its own epoch count, so one Label epoch is one
validation interval, and its run ends after ``max_epochs`` of them. The progress bar and the iteration log count
to that end.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import MLFlowHandler, StatsHandler, TensorBoardHandler, from_engine
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import UserInputError

__all__ = [
    "num_epochs",
    "run_end",
    "IterationSchedule",
    "LogSchedule",
    "IterationLog",
    "TrainingProgress",
    "handlers_for_rank",
]


def num_epochs(num_iterations: int, epoch_length: int) -> int:
    """Ignite epochs (validation intervals) that hold ``num_iterations`` iterations; the last one may be shorter.

    Args:
        num_iterations: total training iterations.
        epoch_length: iterations per epoch (``val_interval``).

    Returns:
        ``ceil(num_iterations / epoch_length)``.

    Raises:
        UserInputError: a value below 1.
    """
    if num_iterations < 1 or epoch_length < 1:
        raise UserInputError(f"num_iterations ({num_iterations}) and val_interval ({epoch_length}) must be >= 1.")
    return math.ceil(num_iterations / epoch_length)


def run_end(engine: Engine, num_iterations: int) -> int:
    """The iteration the run ends at: ``num_iterations``, or the end of the trainer's last epoch if earlier.

    Args:
        engine: the trainer (its ``max_epochs`` and ``epoch_length``).
        num_iterations: iterations of the whole run.

    Returns:
        ``min(num_iterations, max_epochs * epoch_length)``.
    """
    state = engine.state
    if state.max_epochs is None or state.epoch_length is None:
        return int(num_iterations)
    return min(int(num_iterations), int(state.max_epochs) * int(state.epoch_length))


class IterationSchedule:
    """Ignite handler running exactly ``num_iterations`` and starting the data where the iteration count says.

    - At ``num_iterations`` the current epoch ends early (its validation and checkpoint still run) and the run
      ends, so a run of 20 iterations with ``val_interval`` 1000 is one short interval.
    - When the engine starts (after a resume: attach this after the checkpoint handler), the loader's sampler is
      moved to the pass and position of the engine's iteration (:meth:`scripts.workflows.TaskSampler.seek`), so
      the resumed run draws the batches the uninterrupted one would have.

    Args:
        num_iterations: iterations of the whole run.
        dataloader: the training loader, if its sampler can seek (:class:`scripts.workflows.TaskSampler`).

    Raises:
        UserInputError: ``num_iterations`` below 1, or a loader with no full batch per pass.
    """

    def __init__(self, num_iterations: int, dataloader: DataLoader | None = None) -> None:
        if num_iterations < 1:
            raise UserInputError(f"num_iterations must be >= 1, got {num_iterations}.")
        if dataloader is not None and len(dataloader) == 0:
            raise UserInputError(
                f"the training set has {len(dataloader.sampler)} slices per pass (per process), fewer than "  # type: ignore[arg-type]
                f"batch_size {dataloader.batch_size}: give a smaller --batch_size or more data."
            )
        self.num_iterations = int(num_iterations)
        self.dataloader = dataloader

    def attach(self, engine: Engine) -> None:
        """Position the data when ``engine`` starts; stop it after ``num_iterations``."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.num_iterations), self.stop)

    def started(self, engine: Engine) -> None:
        """Refuse a run with nothing left to do; move the sampler to the engine's iteration."""
        if engine.state.iteration >= self.num_iterations:
            raise UserInputError(
                f"the run is at iteration {engine.state.iteration}, not before --num_iterations {self.num_iterations}: "
                "give a larger --num_iterations to extend it."
            )
        sampler = getattr(self.dataloader, "sampler", None)
        if self.dataloader is not None and hasattr(sampler, "seek"):
            pass_index, batch = divmod(engine.state.iteration, len(self.dataloader))
            sampler.seek(pass_index, batch * self.dataloader.batch_size)  # type: ignore[union-attr,operator]

    def stop(self, engine: Engine) -> None:
        """End the run with the current epoch (cut short unless it is complete)."""
        engine.state.max_epochs = engine.state.epoch
        if engine.state.iteration % engine.state.epoch_length:
            engine.terminate_epoch()


def _scalar(value: Any) -> float | None:
    """A loss as a float (``from_engine`` gives a 1-tuple for a dictionary output), or None."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class LogSchedule:
    """Event filter of the iterations to log: 1, 2, 4, ... below ``interval``, then every ``interval``, and the last.

    For ``iteration_log`` of MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler``: the loss is seen from the
    first iterations on, then at the usual interval.

    Args:
        interval: log every this many iterations once past the first ones.
        num_iterations: the last iteration of the run (also logged), if known.
    """

    def __init__(self, interval: int, num_iterations: int | None = None) -> None:
        if interval < 1:
            raise ValueError(f"log interval must be >= 1, got {interval}.")
        self.interval = int(interval)
        self.num_iterations = num_iterations

    def __call__(self, engine: Engine, iteration: int) -> bool:
        """Whether to log ``iteration``."""
        last = (
            self.num_iterations
            if self.num_iterations is None or engine is None
            else run_end(engine, self.num_iterations)
        )
        if iteration % self.interval == 0 or iteration == last:
            return True
        return iteration < self.interval and iteration & (iteration - 1) == 0


class IterationLog:
    """``iteration_print_logger`` of MONAI's ``StatsHandler``: ``iteration 40/200000 -- train_loss: 0.0123``, counting
    to the run's real end (:func:`run_end`).

    MONAI's own line counts Ignite epochs ("Epoch: 3/200, Iter: 40/1000"), which here are validation intervals.

    Args:
        num_iterations: iterations of the whole run.
        tag_name: name of the value.
        output_transform: the value from the engine's output; default: its ``"loss"``.
        name: the logger's name (MONAI's ``StatsHandler`` default).
    """

    def __init__(
        self,
        num_iterations: int,
        tag_name: str = "train_loss",
        output_transform: Callable[[Any], Any] | None = None,
        name: str = "monai.handlers.StatsHandler",
    ) -> None:
        self.num_iterations = int(num_iterations)
        self.tag_name = tag_name
        self.output_transform = output_transform or from_engine(["loss"], first=True)
        self.logger = logging.getLogger(name)

    def __call__(self, engine: Engine) -> None:
        """Log the engine's iteration and value."""
        value = _scalar(self.output_transform(engine.state.output))
        if value is None:
            return
        where = f"iteration {engine.state.iteration}/{run_end(engine, self.num_iterations)}"
        self.logger.info(f"{where} -- {self.tag_name}: {value:.4f}")


class TrainingProgress:
    """Ignite handler showing one progress bar over the run's iterations, with the loss.

    Unlike Ignite's ``ProgressBar`` (one bar per epoch, "Epoch [3/200]"), the bar counts iterations of the whole
    run, starting from the iteration a resumed run starts at.

    Args:
        num_iterations: iterations of the whole run.
        output_transform: the loss from the engine's output; default: its ``"loss"``.
        mininterval: seconds between two refreshes of the bar.
    """

    def __init__(
        self, num_iterations: int, output_transform: Callable[[Any], Any] | None = None, mininterval: float = 1.0
    ) -> None:
        self.num_iterations = int(num_iterations)
        self.output_transform = output_transform or from_engine(["loss"], first=True)
        self.mininterval = mininterval
        self.bar: tqdm | None = None
        self._shown = -math.inf  # when the loss was last read

    def attach(self, engine: Engine) -> None:
        """Open the bar when ``engine`` starts, advance it every iteration, close it when the run ends."""
        engine.add_event_handler(Events.STARTED, self.open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.COMPLETED, self.close)
        engine.add_event_handler(Events.TERMINATE, self.close)

    def open(self, engine: Engine) -> None:
        """A bar from the engine's iteration to the end of the run."""
        self.close(engine)
        self.bar = tqdm(
            total=run_end(engine, self.num_iterations),
            initial=engine.state.iteration,
            desc="training",
            unit="it",
            mininterval=self.mininterval,
            dynamic_ncols=True,
        )

    def update(self, engine: Engine) -> None:
        """One more iteration, with its loss (read only when the bar redraws: on a GPU, reading it waits for the
        step to finish)."""
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self._shown >= self.mininterval:
            loss = _scalar(self.output_transform(engine.state.output))
            if loss is not None:
                self.bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            self._shown = now
        self.bar.update(1)

    def close(self, engine: Engine) -> None:
        """Close the bar, if open."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


#: Handlers that only report (logs, TensorBoard, progress): under DDP only rank 0 runs them.
REPORTING_HANDLERS: tuple[type, ...] = (StatsHandler, TensorBoardHandler, MLFlowHandler, ProgressBar, TrainingProgress)


def handlers_for_rank(handlers: Sequence[Any], rank: int) -> list[Any]:
    """The training handlers a DDP rank runs: all on rank 0, those that change the training on the others.

    Args:
        handlers: the trainer's handlers.
        rank: this process's rank.

    Returns:
        ``handlers`` on rank 0; without the :data:`REPORTING_HANDLERS` on other ranks.
    """
    if rank == 0:
        return list(handlers)
    return [h for h in handlers if not isinstance(h, REPORTING_HANDLERS)]
