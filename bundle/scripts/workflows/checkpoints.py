"""Kill-safe training checkpoints: the last full training state (to resume) and the best model weights.

MONAI's ``CheckpointSaver`` (through Ignite's ``DiskSaver(atomic=False)``) deletes the previous file before
writing the next one in place, so a process killed mid-write can be left with no usable checkpoint. These
handlers write to a temporary file in the same folder and rename it (:func:`scripts.atomic.atomic_path`), so a
file is either the previous complete checkpoint or the new complete one; a temporary file left by a killed run is
removed when the next run starts.

What a resumed run restores, so that it continues as if it had not stopped (:class:`ResumableCheckpoint`): the
objects of ``save_dict`` (network, optimizer, learning-rate scheduler, best metric), the iteration count, and the
random states of torch (CPU and CUDA), numpy and Python. The data order is restored by the sampler from the
iteration count (:class:`scripts.workflows.TaskSampler`). What the new run's settings decide instead: the number
of iterations, the validation interval (the length of an Ignite epoch), and the length and floor of the cosine
schedule (``T_max``, ``eta_min``), so that extending a run continues its learning rate without a jump.

A resume needs the checkpoint: without it, it is an error (never a silent fresh start), and :class:`BestCheckpoint`
never replaces a ``model.pt`` that the run did not start from. A write that fails for want of space stops the
training with one line naming the folder and saying how to resume (:meth:`ResumableCheckpoint.stopped`).

Not restored: under DDP every rank takes rank 0's random states (the ranks' own are not saved); TensorBoard keeps
the loss points a killed run logged after its last checkpoint, so they appear twice; nondeterministic GPU kernels
are not made deterministic. On one process (CPU) a resumed run ends with the same weights, bit for bit, as the run
that was never stopped (``tests/test_configs_train.py``).
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from tqdm import tqdm

from ..atomic import DiskFullError, atomic_path, disk_full_cause, remove_stale_temporaries
from ..errors import UserInputError, find_user_error
from ..weights import load_checkpoint

__all__ = ["save_atomic", "saved_iteration", "rng_state", "set_rng_state", "ResumableCheckpoint", "BestCheckpoint"]

logger = logging.getLogger(__name__)

#: Scheduler attributes the resumed run takes from its own settings rather than from the checkpoint.
SCHEDULE_SETTINGS = ("T_max", "eta_min", "total_iters")


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path`` (mode 0644).

    Args:
        obj: what to save.
        path: destination; its folder is created.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def saved_iteration(path: str | os.PathLike, engine_key: str = "trainer") -> int:
    """The iteration a :class:`ResumableCheckpoint` file was saved at, read without loading its tensors.

    Args:
        path: the checkpoint file.
        engine_key: key of the engine's state in the file.

    Returns:
        The saved engine's iteration count.
    """
    checkpoint = load_checkpoint(path, map_location="cpu", mmap=True)
    return int(checkpoint[engine_key]["iteration"])


def rng_state() -> dict[str, Any]:
    """The random states of torch (CPU, and CUDA once initialised), numpy's global generator and Python's ``random``.

    Returns:
        A dictionary of tensors and numbers (loadable with ``weights_only=True``), for :func:`set_rng_state`.
    """
    # numpy's legacy global generator is the one set_determinism seeds and third-party code draws from
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the random states saved by :func:`rng_state` (CUDA's only where the device count matches)."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _state_dict(obj: Any) -> Any:
    """The state dict of ``obj``, unwrapping ``DistributedDataParallel`` / ``DataParallel``."""
    return getattr(obj, "module", obj).state_dict()


class ResumableCheckpoint:
    """Ignite handler saving the whole training state atomically at an interval, and optionally resuming from it.

    The saved file holds ``save_dict``'s state dicts, the attached engine's (its iteration count) under
    ``engine_key`` and the random states (:func:`rng_state`) under ``"rng"``. With ``resume=True`` it is loaded
    (``weights_only=True``) when the engine starts, so training continues where the file left it: a killed run loses
    at most one interval. The new run keeps its own ``max_epochs``, epoch length (validation interval) and schedule
    settings (:data:`SCHEDULE_SETTINGS` of the schedulers in ``save_dict``). When the engine starts, the bundle's
    temporary files left in ``save_dir`` by a killed run are removed. Only rank 0 writes; every rank loads.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict`` (network, optimizer, scheduler, other handlers).
        save_interval: save every this many epochs (``epoch_level``) or iterations.
        epoch_level: count the interval in epochs rather than iterations.
        filename: checkpoint file name.
        resume: load the checkpoint, if there is one, when the engine starts.
        engine_key: key of the engine's own state in the file.
    """

    rng_key = "rng"

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
        for reserved in (engine_key, self.rng_key):
            if reserved in save_dict:
                raise ValueError(f"save_dict must not use the key {reserved!r}: the checkpoint uses it.")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.save_interval = save_interval
        self.epoch_level = epoch_level
        self.resume = resume
        self.engine_key = engine_key
        self.saved_at: int | None = None  # iteration of the checkpoint on disk, once saved or loaded

    def attach(self, engine: Engine) -> None:
        """Clean up and, with ``resume``, load when ``engine`` starts; save at the interval; report a full disk.

        Attach it before MONAI's ``StatsHandler``: Ignite calls only the first ``EXCEPTION_RAISED`` handler that raises,
        and the ``StatsHandler``'s logs a traceback.

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.STARTED, self.remove_stale_temporaries)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event(every=self.save_interval), self.save)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.stopped)

    def stopped(self, engine: Engine, error: BaseException) -> None:
        """``EXCEPTION_RAISED``: a write that failed for want of space becomes one
        :class:`~scripts.atomic.DiskFullError` naming the folder, the checkpoint a resume starts from and what to do;
        any other error is raised unchanged.

        Raises:
            DiskFullError: the disk (or a quota, or the file size limit) was full.
            BaseException: ``error``, for any other cause.
        """
        for bar in list(getattr(tqdm, "_instances", ())):  # end the progress bar's line: the error is a line of its own
            bar.close()
        cause, full = disk_full_cause(error), find_user_error(error)
        if cause is None and not isinstance(full, DiskFullError):  # one from a DataLoader worker has no cause
            raise error
        folder = self.path.parent
        if isinstance(full, DiskFullError) and full.folder is not None:
            folder = full.folder
        elif cause is not None and cause.filename:
            folder = Path(os.fsdecode(cause.filename)).parent
        reason = cause.strerror if cause is not None else "no space left"
        if self.saved_at is not None:
            then = f"its last checkpoint, {self.path} (iteration {self.saved_at}), is intact. Free space there, then "
            then += "run the same command with --resume true"
        else:
            then = "no checkpoint was saved yet. Free space there, then run the same command with --overwrite true"
        raise DiskFullError(
            f"{folder}: the disk is full ({reason}): training stopped at iteration {engine.state.iteration}; {then}."
        ) from error

    def remove_stale_temporaries(self, engine: Engine) -> None:
        """Remove the temporary files a killed run left in the checkpoint folder (rank 0; no write is in flight)."""
        if idist.get_rank() != 0:
            return
        for path in remove_stale_temporaries(self.path.parent):
            engine.logger.info(f"Removed {path}, left by an interrupted write.")

    def save(self, engine: Engine) -> None:
        """Write the checkpoint (rank 0 only)."""
        if idist.get_rank() != 0:
            return
        state = {key: _state_dict(obj) for key, obj in self.save_dict.items()}
        state[self.engine_key] = engine.state_dict()
        state[self.rng_key] = rng_state()
        save_atomic(state, self.path)
        self.saved_at = engine.state.iteration
        engine.logger.info(f"Saved checkpoint at iteration {engine.state.iteration}: {self.path}")

    def load(self, engine: Engine) -> None:
        """Restore every object, the engine's iteration and the random states from the checkpoint.

        Raises:
            UserInputError: there is no checkpoint (a resume never starts over silently).
        """
        if not self.path.is_file():
            raise UserInputError(
                f"{self.path}: missing, so the run cannot be resumed; to train it anew, drop --resume and add "
                "--overwrite true."
            )
        checkpoint = load_checkpoint(self.path, map_location="cpu")
        missing = [k for k in (*self.save_dict, self.engine_key) if k not in checkpoint]
        if missing:
            raise ValueError(f"{self.path}: the checkpoint has no {missing} (keys: {sorted(checkpoint)}).")
        max_epochs, epoch_length = engine.state.max_epochs, engine.state.epoch_length
        schedules = {
            key: {name: getattr(obj, name) for name in SCHEDULE_SETTINGS if hasattr(obj, name)}
            for key, obj in self.save_dict.items()
            if isinstance(obj, torch.optim.lr_scheduler.LRScheduler)
        }
        Checkpoint.load_objects(to_load={**self.save_dict, self.engine_key: engine}, checkpoint=checkpoint)
        # the new run's length and validation interval win over the saved ones
        engine.state.max_epochs = max_epochs
        if epoch_length is not None:
            engine.state.epoch_length = epoch_length
            engine.state.epoch = engine.state.iteration // epoch_length
        for key, settings in schedules.items():
            self._keep_schedule(engine, self.save_dict[key], settings)
        if self.rng_key in checkpoint:
            set_rng_state(checkpoint[self.rng_key])
        else:
            engine.logger.warning(f"{self.path} holds no random states: the resumed run will not repeat the original.")
        self.saved_at = engine.state.iteration
        engine.logger.info(f"Resumed from {self.path} at iteration {engine.state.iteration}.")

    @staticmethod
    def _keep_schedule(engine: Engine, scheduler: Any, settings: Mapping[str, Any]) -> None:
        """Give ``scheduler`` back the new run's ``settings``; a chainable cosine then goes on from the current rate.

        ``CosineAnnealingLR`` steps by the ratio of consecutive cosine values applied to the current rate, so with a
        new ``T_max`` the rate continues from where it is down to ``eta_min`` at the new end: no jump.
        """
        saved = {name: getattr(scheduler, name) for name in settings}
        for name, value in settings.items():
            setattr(scheduler, name, value)
        changed = {name: (saved[name], value) for name, value in settings.items() if saved[name] != value}
        if changed:
            lr = ", ".join(f"{v:.3g}" for v in scheduler.get_last_lr())
            text = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changed.items())
            engine.logger.info(f"Learning-rate schedule changed on resume ({text}); it continues from lr {lr}.")


class BestCheckpoint:
    """Ignite handler saving the network's weights atomically whenever the key metric improves.

    Attach it to the evaluator. The file is a plain state dict (the format of ``models/model.pt``). Its state
    (the best value so far) can go into a :class:`ResumableCheckpoint` so that a resumed run keeps comparing
    against the real best. A file it neither wrote nor took the state of (by a resume) is never replaced: that
    would put a worse model over another run's best.

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
        self.owns_file = False  # the file is this run's: it wrote it, or resumed with its state

    def attach(self, engine: Engine) -> None:
        """Check the metric after every evaluation; a full disk passes on to the trainer without a traceback.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.stopped)

    @staticmethod
    def stopped(engine: Engine, error: BaseException) -> None:
        """``EXCEPTION_RAISED``: raise ``error`` to the trainer before MONAI's ``StatsHandler`` logs a traceback."""
        raise error

    def __call__(self, engine: Engine) -> None:
        """Save the weights if the metric is at least as good as the best so far (the released code's ``>=``)."""
        name = self.metric_name or engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        if not math.isfinite(value):  # NaN or inf is never a best model (inf would also block every later one)
            engine.logger.error(f"{name} is {value}: not a best model; {self.path} is not replaced")
            return
        if not value >= self.best_metric:
            return
        if idist.get_rank() == 0 and not self.owns_file and self.path.exists():
            raise UserInputError(
                f"{self.path}: exists and this training did not start from it, so it is not replaced; resume the run "
                "that wrote it (--resume true) or start a new one in another folder (--run_name)."
            )
        self.best_metric, self.best_epoch = value, int(engine.state.epoch)
        self.owns_file = True
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
        self.owns_file = True
