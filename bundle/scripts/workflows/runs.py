"""One folder per training run, with a record of how it was run; a resume is checked against that record.

A training run writes everything into its own folder, ``--run_dir``, by default ``<bundle_root>/runs/<run_name>``
(a time stamp when no ``--run_name`` is given): ``models/`` (``checkpoint_last.pt``, ``model.pt``), TensorBoard
events, the config as run (``config.json``) and ``run.json`` (the settings a resume must share, and each command
line that started or resumed the run). The folder carries the bundle's marker (:mod:`scripts.ownership`).

:class:`TrainingRun` refuses what would lose or mix results: a second training or resume in a folder a training
is running in (the folder's :class:`~scripts.workflows.run_lock.RunLock`), a new run into a folder that holds an
earlier run's checkpoints (unless ``--overwrite true``, and only in a folder the bundle made), a resume without the
run's ``checkpoint_last.pt`` (it would start over and replace the run's best ``model.pt``), and a resume whose data,
network or schedule settings (:data:`RESUME_CHECKS`) differ from the run's (unless ``--resume_force true``). A
larger ``--num_iterations`` on resume extends the run.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import json
import logging
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from monai.bundle import ConfigParser

from ..atomic import write_text_atomic
from ..errors import UserInputError, find_user_error
from ..ownership import MARKER, check_replaceable, folder_kind, mark_folder
from ..weights import file_sha256
from .checkpoints import saved_iteration
from .run_lock import LOCK_NAME, RunLock

__all__ = ["RUN_KIND", "RESUME_CHECKS", "run_dir", "list_runs", "executed_config", "TrainingRun"]

logger = logging.getLogger(__name__)

#: The marker kind of a training run's folder.
RUN_KIND = "run"
#: Ids of the training config that a resume must share with the run, by what they decide.
RESUME_CHECKS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "dataset_dir", "tasks", "modality", "task_weights", "mix_demo"),
    "network": ("network_def",),
    "schedule": ("learning_rate", "min_learning_rate", "batch_size", "patch_size", "gamma", "seed"),
    # the checkpoint holds a gradient scaler only for float16, and a weight average only with ema_decay
    "precision": ("amp", "amp_dtype", "ema_decay"),
    # the weights a fine-tuning started from, and what it trains
    "fine-tuning": ("init_ckpt", "freeze"),
}
#: The value a setting has when not given, as in the records of runs from before it existed (what they did).
RECORDED_DEFAULTS: dict[str, Any] = {"mix_demo": 0.0}
#: ``network_def`` arguments that change how the network computes, not what: they may differ on resume.
EQUIVALENT_NETWORK_ARGS = ("gradient_checkpointing", "moe_dispatch")
#: What MONAI's ``--tracking`` writes into ``output_dir`` before the run starts.
_EXECUTED_CONFIG = re.compile(r"config_\d{8}_\d{6}\.json")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def list_runs(runs_dir: str | os.PathLike) -> list[str]:
    """Names of the training-run folders in ``runs_dir`` (those carrying the bundle's run marker), sorted."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and folder_kind(p) == RUN_KIND)


def run_dir(
    runs_dir: str | os.PathLike, run_name: str | None = None, prefix: str = "train", resume: bool = False
) -> str:
    """The folder of a run: ``runs_dir/run_name``, or a new time-stamped ``runs_dir/<prefix>-YYYYmmdd-HHMMSS``.

    Under DDP every rank gets rank 0's name.

    Args:
        runs_dir: the folder holding the runs.
        run_name: the run's name (a plain folder name); None: a new time-stamped name.
        prefix: start of a time-stamped name (``train``, ``evaluate``).
        resume: the run is to be resumed, so it must be named.

    Returns:
        The run folder's path (not created).

    Raises:
        UserInputError: ``run_name`` is not a plain folder name, or ``resume`` without ``run_name``.
    """
    if run_name is not None:
        name = str(run_name)
        if not name or name in (".", "..") or Path(name).name != name or name.startswith("."):
            raise UserInputError(
                f"--run_name {name!r} is not a plain folder name; use --run_dir FOLDER to put a run elsewhere."
            )
        return os.fspath(Path(runs_dir) / name)
    if resume:
        runs = ", ".join(list_runs(runs_dir)) or "none"
        raise UserInputError(f"--resume true needs the run to resume: --run_name NAME (runs in {runs_dir}: {runs}).")
    return os.fspath(Path(runs_dir) / _new_run_name(os.fspath(runs_dir), prefix))


@functools.cache
def _new_run_name(runs_dir: str, prefix: str) -> str:
    """A time-stamped name no folder in ``runs_dir`` has; rank 0's under DDP.

    Cached: MONAI resolves a config again after ``--tracking`` resolved ``output_dir``, and one process is one run.
    """
    stamp = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = stamp, 1
    while (Path(runs_dir) / name).exists():
        n += 1
        name = f"{stamp}-{n}"
    if dist.is_available() and dist.is_initialized():
        shared = [name]
        dist.broadcast_object_list(shared, src=0)
        name = shared[0]
    return name


def executed_config() -> dict[str, Any] | None:
    """The config (overrides applied, macros resolved) of the MONAI ``ConfigParser`` now running, or None.

    MONAI gives a component no handle on the parser that instantiates it, but that parser is the ``self`` of a
    ``get_parsed_content`` call further up the stack.

    Returns:
        A JSON-compatible copy of the parser's config.
    """
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ConfigParser):
            return json.loads(json.dumps(copy.deepcopy(owner.get()), default=str))
        frame = frame.f_back
    return None


def _normalized(key: str, value: Any) -> Any:
    """A setting as compared on resume: JSON types, absolute folders, network arguments that change the result."""
    value = RECORDED_DEFAULTS.get(key) if value is None else json.loads(json.dumps(value, default=str))
    if (key.endswith("_dir") or key == "init_ckpt") and isinstance(value, str) and not value.startswith("$"):
        return os.path.abspath(os.path.expanduser(value))
    if key == "network_def" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in EQUIVALENT_NETWORK_ARGS}
    return value


def _is_new(folder: Path) -> bool:
    """A missing folder, an empty one, or one holding only the executed config MONAI's ``--tracking`` wrote (and
    the lock file of this run)."""
    if not folder.exists():
        return True
    return folder.is_dir() and all(_EXECUTED_CONFIG.fullmatch(p.name) or p.name == LOCK_NAME for p in folder.iterdir())


class TrainingRun:
    """The folder of one training run: checks before it starts or resumes, then creates, marks and records it.

    :meth:`prepare` (in the configs it gives ``output_dir``, so it runs before anything writes into the folder):

    - the folder's lock is taken for the rest of the process (:class:`~scripts.workflows.run_lock.RunLock`): a
      training running there already is named and refused; the checks below are made under the lock;
    - a new run needs a new or empty folder, or a run folder of the bundle without checkpoints (a run stopped
      before its first one); with ``overwrite`` an earlier run in a folder the bundle made is deleted first;
    - a resume needs the bundle's run folder, its ``checkpoint``, the same :data:`RESUME_CHECKS` settings as recorded
      (or ``resume_force``), and ``num_iterations`` beyond the checkpoint's iteration (larger than before: the run
      is extended);
    - then (rank 0) the folder is created and marked, ``config.json`` holds the config as run and ``run.json`` the
      settings and the command lines of every start.

    Args:
        run_dir: the run's folder.
        num_iterations: iterations of the whole run.
        resume: continue the run in ``run_dir`` from its checkpoint.
        resume_force: resume even if data, network or schedule settings differ (the new ones are recorded).
        overwrite: start a new run in ``run_dir`` even if it holds an earlier run of the bundle (deleted).
        config: the config as run; None: the MONAI parser's (:func:`executed_config`).
        command_line: the command line; None: ``sys.argv``.
        checkpoint: the resumable checkpoint's path inside ``run_dir``.
        init_ckpt: the weights a fine-tuning starts from (``--init_ckpt``, as resolved); its path and sha256 are
            recorded in ``run.json`` as the run's ``"parent"``.

    Raises:
        ValueError: no ``config`` given and none found.
    """

    record_name = "run.json"
    config_name = "config.json"

    def __init__(
        self,
        run_dir: str | os.PathLike,
        num_iterations: int,
        resume: bool = False,
        resume_force: bool = False,
        overwrite: bool = False,
        config: Mapping[str, Any] | None = None,
        command_line: Sequence[str] | None = None,
        checkpoint: str = "models/checkpoint_last.pt",
        init_ckpt: str | os.PathLike | None = None,
    ) -> None:
        config = executed_config() if config is None else json.loads(json.dumps(config, default=str))
        if config is None:
            raise ValueError("TrainingRun needs the config as run (no MONAI ConfigParser is running).")
        self.path = Path(run_dir)
        self.num_iterations = int(num_iterations)
        self.resume, self.resume_force, self.overwrite = bool(resume), bool(resume_force), bool(overwrite)
        self.config = config
        self.command_line = list(sys.argv if command_line is None else command_line)
        self.checkpoint = self.path / checkpoint
        self.settings = {key: _normalized(key, config.get(key)) for keys in RESUME_CHECKS.values() for key in keys}
        self.init_ckpt = None if init_ckpt is None else Path(init_ckpt)
        if self.init_ckpt is not None:  # the resolved path (the config may give an expression)
            self.settings["init_ckpt"] = _normalized("init_ckpt", os.fspath(self.init_ckpt))
        self.lock = RunLock(self.path)
        self._created = False  # whether this run created its folder (removed again if the run is refused)

    @property
    def record_path(self) -> Path:
        return self.path / self.record_name

    def read_record(self) -> dict[str, Any]:
        """The run's ``run.json``.

        Raises:
            UserInputError: it is missing or unreadable.
        """
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError) as e:
            raise UserInputError(f"{self.record_path}: cannot read the run's record ({e}); cannot resume it.") from e

    def differences(self, recorded: Mapping[str, Any]) -> dict[str, list[str]]:
        """The settings that differ from ``recorded``, by group of :data:`RESUME_CHECKS`: ``"id 'old' (now 'new')"``."""
        found: dict[str, list[str]] = {}
        for group, keys in RESUME_CHECKS.items():
            for key in keys:
                old, new = _normalized(key, recorded.get(key)), self.settings.get(key)
                if old != new:
                    found.setdefault(group, []).append(f"{key} {old!r} (now {new!r})")
        return found

    def prepare(self) -> str:
        """Lock and check (rank 0), then create and record the run's folder; under DDP the other ranks wait for it.

        Returns:
            The run's folder, for ``output_dir``: whatever writes there resolves it, so comes after this.
        """
        if _rank() == 0:
            self._lock()
            try:
                self.check()
                self.create()
            except BaseException:
                self._unlock()
                raise
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return os.fspath(self.path)

    def _lock(self) -> None:
        """Take the folder's lock, creating the folder of a new run; nothing is written into a folder refused."""
        ours = self.path.is_dir() and (folder_kind(self.path) == RUN_KIND or _is_new(self.path))
        if not ours and (self.resume or self.path.exists()):
            self.check()  # no run to resume, or a file or folder that is not the bundle's: refused without a write
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()

    def _unlock(self) -> None:
        """Give the lock up after a refusal, and remove the folder if this run created it and it holds nothing else."""
        self.lock.release()
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def _discard_if_refused(self) -> None:
        """At exit: remove the folder this process created if a user error ended the process (reported as one
        ``error:`` line: bad data, weights or options found after the folder was made) before any checkpoint, so a
        refused run leaves nothing behind."""
        if find_user_error(getattr(sys, "last_value", None)) is None or any(self.path.glob("models/*.pt")):
            return
        if folder_kind(self.path) == RUN_KIND:
            self.lock.release()
            shutil.rmtree(self.path, ignore_errors=True)

    def check(self) -> None:
        """Raise :class:`~scripts.errors.UserInputError` if the run cannot start or resume as asked."""
        if self.init_ckpt is not None and not self.resume and not self.init_ckpt.is_file():
            raise UserInputError(f"{self.init_ckpt}: --init_ckpt not found; give a model.pt or checkpoint_last.pt.")
        if self.resume:
            self._check_resume()
        else:
            self._check_new()

    def _check_resume(self) -> None:
        if not self.path.is_dir():
            runs = ", ".join(list_runs(self.path.parent)) or "none"
            raise UserInputError(f"resume: there is no run at {self.path} (runs in {self.path.parent}: {runs}).")
        if folder_kind(self.path) != RUN_KIND:
            raise UserInputError(f"resume: {self.path} is not a training run of this bundle (no {MARKER}).")
        record = self.read_record()
        differ = self.differences(record.get("settings", {}))
        if differ:
            text = "; ".join(f"{group}: {', '.join(items)}" for group, items in differ.items())
            if not self.resume_force:
                raise UserInputError(
                    f"resume: run {self.path} was trained with other settings ({text}). Repeat the run's settings "
                    f"(its command lines are in {self.record_path}) or add --resume_force true to resume with these."
                )
            logger.warning(f"resume {self.path} with other settings than recorded, as forced: {text}.")
        if not self.checkpoint.is_file():
            best = self.checkpoint.parent / "model.pt"
            loses = f" (this deletes its {best.name})" if best.is_file() else ""
            raise UserInputError(
                f"{self.checkpoint}: missing, so run {self.path} cannot be resumed (a resume would start over); to "
                f"train this run anew, drop --resume and add --overwrite true{loses}, or give another --run_name."
            )
        done = saved_iteration(self.checkpoint)
        if done >= self.num_iterations:
            raise UserInputError(
                f"resume: run {self.path} has trained {done} iterations already; give --num_iterations "
                f"larger than {done} to extend it."
            )
        before = int(record.get("num_iterations", self.num_iterations))
        if self.num_iterations != before:
            logger.info(f"Run {self.path}: {before} -> {self.num_iterations} iterations, resumed at {done}.")

    def _check_new(self) -> None:
        if _is_new(self.path):
            return
        hint = "Give another --run_name (or --run_dir)."
        check_replaceable(self.path, RUN_KIND, hint)  # raises for a file or a folder the bundle did not make
        results = sorted(self.checkpoint.parent.glob("*.pt")) if self.checkpoint.parent.is_dir() else []
        if not results:
            return  # a run stopped before its first checkpoint: nothing to lose
        if not self.overwrite:
            raise UserInputError(
                f"{self.path} holds a training run already ({', '.join(p.name for p in results)}): resume it with "
                "--resume true, give another --run_name, or replace it with --overwrite true."
            )
        logger.warning(f"--overwrite true: deleting the earlier run in {self.path}.")
        for entry in self.path.iterdir():  # all but this run's lock
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def create(self) -> None:
        """Create and mark the folder; write ``config.json`` and add this start to ``run.json``."""
        self.path.mkdir(parents=True, exist_ok=True)
        if folder_kind(self.path) != RUN_KIND:
            mark_folder(self.path, RUN_KIND)
        record = self.read_record() if self.record_path.is_file() else {"run": self.path.name, "starts": []}
        record["settings"] = self.settings
        record["num_iterations"] = self.num_iterations
        if self.init_ckpt is not None and not self.resume:
            record["parent"] = {"path": os.path.abspath(self.init_ckpt), "sha256": file_sha256(self.init_ckpt)}
        record["starts"].append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "resume": self.resume,
                "num_iterations": self.num_iterations,
                "cwd": os.getcwd(),
                "command_line": shlex.join(self.command_line),
            }
        )
        write_text_atomic(json.dumps(self.config, indent=4) + "\n", self.path / self.config_name)
        write_text_atomic(json.dumps(record, indent=4, default=str) + "\n", self.record_path)
        if self._created:
            atexit.register(self._discard_if_refused)
        logger.info(f"{'Resuming' if self.resume else 'Training'} run {self.path}")
