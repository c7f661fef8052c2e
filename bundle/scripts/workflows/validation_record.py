"""The run's record of its validations: every metric of each one, and the data each task was validated on.

A fine-tuning on one task reports the others on other data (:mod:`scripts.data.other_tasks`); the record says which
data each task's numbers come from, so that what the fine-tuning traded can be read from the run folder alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from ..atomic import write_text_atomic

__all__ = ["ValidationRecord", "describe_sources"]

logger = logging.getLogger(__name__)


def describe_sources(
    sources: Mapping[str, str | None], dataset: str, prefix: str = "val_", key: str = "psnr"
) -> dict[str, Any]:
    """Where each task's validation numbers come from, and what the key metric averages.

    Args:
        sources: task -> label of other data, None for the training's own (see
            :func:`scripts.data.other_tasks.task_sources`).
        dataset: the training data's name (the config's ``dataset``).
        prefix: the metrics' prefix.
        key: the key metric's measure.

    Returns:
        ``{"tasks": {task: {"data", "split", "metrics"}}, "key_metric": text}``.
    """
    tasks = {
        task: {
            "data": label or dataset,
            "split": "validation",
            "metrics": f"{label + '_' if label else ''}{prefix}*_{task}",
        }
        for task, label in sources.items()
    }
    own = [task for task, label in sources.items() if not label]
    key_metric = f"{prefix}{key}: mean {key.upper()} of {', '.join(own)} (the training data's tasks); chooses model.pt"
    return {"tasks": tasks, "key_metric": key_metric}


class ValidationRecord:
    """Ignite handler: after each validation, its metrics go into ``path`` (JSON, written atomically).

    The file holds ``"sources"`` (:func:`describe_sources`) and ``"validations"``: one entry per validation,
    ``{"iteration", "metrics"}``, in order of iteration. A resumed run keeps the entries of the run before it (an
    iteration validated again replaces its entry). The first validation also logs, before it starts, where each
    task's data come from.

    Args:
        path: the record (``<run>/validation.json``).
        sources: task -> label of other data, None for the training's own.
        dataset: the training data's name.
        global_step_transform: maps the evaluator's epoch to the training iteration.
        prefix: the metrics' prefix.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sources: Mapping[str, str | None],
        dataset: str,
        global_step_transform: Callable[[int], int] = lambda epoch: epoch,
        prefix: str = "val_",
    ) -> None:
        self.path = Path(path)
        self.sources = describe_sources(sources, dataset, prefix)
        self.global_step_transform = global_step_transform
        self._logged = False

    def attach(self, engine: Engine) -> None:
        """Log the sources before the first evaluation, record at the end of every one.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self.log_sources)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def log_sources(self) -> None:
        """Log which data each task is validated on, and what the key metric averages (once)."""
        if self._logged:
            return
        self._logged = True
        where = "; ".join(f"{task}: {s['data']} ({s['metrics']})" for task, s in self.sources["tasks"].items())
        logger.info(f"Validation data per task: {where}. Key metric {self.sources['key_metric']}.")

    def _entries(self) -> dict[int, dict[str, Any]]:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {int(entry["iteration"]): entry for entry in record.get("validations", [])}

    def __call__(self, engine: Engine) -> None:
        """Add this validation's scalar metrics."""
        iteration = int(self.global_step_transform(engine.state.epoch))
        metrics = {
            name: float(value)
            for name, value in engine.state.metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        entries = self._entries()
        entries[iteration] = {"iteration": iteration, "metrics": metrics}
        record = {"sources": self.sources, "validations": [entries[i] for i in sorted(entries)]}
        # non-finite values (an exact restoration's infinite PSNR) are written as Python's json writes them
        write_text_atomic(json.dumps(record, indent=4) + "\n", self.path)
