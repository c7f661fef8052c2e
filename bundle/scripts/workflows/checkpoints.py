"""Kill-safe training checkpoints: the last full training state (to resume) and the best model weights.

MONAI's ``CheckpointSaver`` (through Ignite's ``DiskSaver(atomic=False)``) deletes the previous file before
writing the next one in place, so a process killed mid-write can be left with no usable checkpoint. These
handlers write to a temporary file in the same folder and ``os.replace`` it, so a file is either the previous
complete checkpoint or the new complete one.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

__all__ = ["save_atomic", "ResumableCheckpoint", "BestCheckpoint"]

logger = logging.getLogger(__name__)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``.

    Args:
        obj: what to save.
        path: destination; its folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _state_dict(obj: Any) -> Any:
    """The state dict of ``obj``, unwrapping ``DistributedDataParallel`` / ``DataParallel``."""
    return getattr(obj, "module", obj).state_dict()


class ResumableCheckpoint:
    """Ignite handler saving the whole training state atomically at an interval, and optionally resuming from it.

    The saved file holds ``save_dict``'s state dicts plus the attached engine's (its iteration count) under
    ``engine_key``. With ``resume=True`` it is loaded (``weights_only=True``) when the engine starts, so training
    continues where the file left it: a killed run loses at most one interval. ``max_epochs`` stays the one of
    the new run. Only rank 0 writes; every rank loads.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict`` (network, optimizer, scheduler, other handlers).
        save_interval: save every this many epochs (``epoch_level``) or iterations.
        epoch_level: count the interval in epochs rather than iterations.
        filename: checkpoint file name.
        resume: load the checkpoint, if there is one, when the engine starts.
        engine_key: key of the engine's own state in the file.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        epoch_level: bool = True,
        filename: str = "checkpoint_last.pt",
        resume: bool = False,
        engine_key: str = "trainer",
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        if engine_key in save_dict:
            raise ValueError(f"save_dict must not use the key {engine_key!r}: it holds the engine's state.")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.save_interval = save_interval
        self.epoch_level = epoch_level
        self.resume = resume
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        """Save at the interval and, with ``resume``, load when ``engine`` starts.

        Args:
            engine: the trainer.
        """
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event(every=self.save_interval), self.save)

    def save(self, engine: Engine) -> None:
        """Write the checkpoint (rank 0 only)."""
        if idist.get_rank() != 0:
            return
        state = {key: _state_dict(obj) for key, obj in self.save_dict.items()}
        state[self.engine_key] = engine.state_dict()
        # a run killed while writing leaves its temporary file behind: only rank 0 writes, so it is stale
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        save_atomic(state, self.path)
        engine.logger.info(f"Saved checkpoint at iteration {engine.state.iteration}: {self.path}")

    def load(self, engine: Engine) -> None:
        """Restore every object and the engine's iteration from the checkpoint, if it exists."""
        if not self.path.is_file():
            engine.logger.warning(f"resume: no checkpoint at {self.path}; training starts from scratch.")
            return
        checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        missing = [k for k in (*self.save_dict, self.engine_key) if k not in checkpoint]
        if missing:
            raise ValueError(f"{self.path}: the checkpoint has no {missing} (keys: {sorted(checkpoint)}).")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load={**self.save_dict, self.engine_key: engine}, checkpoint=checkpoint)
        # the new run's length wins over the saved one, as MONAI's CheckpointLoader does
        engine.state.max_epochs = max_epochs
        engine.logger.info(f"Resumed from {self.path} at iteration {engine.state.iteration}.")


class BestCheckpoint:
    """Ignite handler saving the network's weights atomically whenever the key metric improves.

    Attach it to the evaluator. The file is a plain state dict (the format of ``models/model.pt``). Its state
    (the best value so far) can go into a :class:`ResumableCheckpoint` so that a resumed run keeps comparing
    against the real best.

    Args:
        save_dir: folder of the weights.
        network: the network, possibly wrapped in ``DistributedDataParallel``.
        filename: file name of the weights.
        metric_name: metric to maximise; default: the engine's key metric.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        filename: str = "model.pt",
        metric_name: str | None = None,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.network = network
        self.metric_name = metric_name
        self.best_metric = -math.inf
        self.best_epoch = -1

    def attach(self, engine: Engine) -> None:
        """Check the metric after every evaluation.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Save the weights if the metric is at least as good as the best so far (the released code's ``>=``)."""
        name = self.metric_name or engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        if not value >= self.best_metric:  # also false for NaN
            return
        self.best_metric, self.best_epoch = value, int(engine.state.epoch)
        if idist.get_rank() == 0:
            save_atomic(_state_dict(self.network), self.path)
            engine.logger.info(f"Best {name} {value:.4f} at epoch {self.best_epoch}: saved {self.path}")

    def state_dict(self) -> dict[str, float | int]:
        """The best value and the epoch it was reached at."""
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: Mapping[str, float | int]) -> None:
        """Restore the best value (from a resumed checkpoint)."""
        self.best_metric = float(state_dict["best_metric"])
        self.best_epoch = int(state_dict["best_epoch"])
