"""The evaluation report: per-slice metrics (CSV), a table shaped like the paper's Table 1 (Markdown), figures.

Rows of the table are "methods": the evaluated network, and any number of reference methods computed from the
same LQ slices (the LQ input itself; classical baselines). A reference method is a callable
``method(image, task) -> restored`` on a ``(1, H, W)`` physical-unit LQ slice. Runs sharing an output folder
accumulate: a run replaces only the rows of the methods it evaluated, so evaluating AMIR then Restormer into one
folder gives one table with both. The table's header names each network's weights file and its sha256
(``weights.json`` keeps them across runs); a training run's folder is never written into.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from ..atomic import remove_stale_temporaries, write_text_atomic
from ..errors import UserInputError
from ..ownership import folder_kind
from ..weights import file_sha256
from .figures import as_item_list, restoration_panel, save_png
from .metrics import METRIC_NAMES, restoration_metrics
from .runs import RUN_KIND

__all__ = ["TASK_TITLES", "lq_input", "markdown_table", "RestorationReport"]

logger = logging.getLogger(__name__)

#: Column titles of the tasks, as the paper's Table 1.
TASK_TITLES: dict[str, str] = {"mri": "MRI SR", "ct": "CT denoising", "pet": "PET synthesis"}
_CSV_FIELDS = ("method", "task", "id", *METRIC_NAMES)
_DECIMALS = {"psnr": 4, "ssim": 4, "rmse": 4}
#: The weights of each network row of an evaluation folder: method -> {"path", "sha256"}.
WEIGHTS_FILE = "weights.json"

Method = Callable[[torch.Tensor, str], torch.Tensor]


def lq_input(image: torch.Tensor, task: str) -> torch.Tensor:
    """The "LQ input" row: the degraded image itself."""
    return image


def markdown_table(rows: Sequence[Mapping[str, str | float]], tasks: Sequence[str]) -> str:
    """Table 1 of the paper from per-slice rows: a row per method, PSNR / SSIM / RMSE per task, and the average.

    Each method's value for a task is the mean over that task's slices; "Average" is the mean over the tasks of
    PSNR and SSIM (RMSE is in different units per task, so it has no average).

    Args:
        rows: per-slice rows with ``method``, ``task`` and the metrics.
        tasks: task columns, in order; tasks without rows are left out.

    Returns:
        The Markdown table.
    """
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    present = [t for t in tasks if any(r["task"] == t for r in rows)]
    header = ["method"] + [f"{TASK_TITLES.get(t, t)} {m.upper()}" for t in present for m in METRIC_NAMES]
    header += ["Average PSNR", "Average SSIM"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells, averages = [method], {"psnr": [], "ssim": []}
        for task in present:
            selected = [r for r in rows if r["method"] == method and r["task"] == task]
            for name in METRIC_NAMES:
                if not selected:
                    cells.append("-")
                    continue
                value = sum(float(r[name]) for r in selected) / len(selected)
                cells.append(f"{value:.{_DECIMALS[name]}f}")
                if name in averages:
                    averages[name].append(value)
        for name in ("psnr", "ssim"):
            values = averages[name]
            cells.append(f"{sum(values) / len(values):.4f}" if len(values) == len(present) and values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "method"


class RestorationReport:
    """Ignite handler writing the evaluation report of an evaluator.

    Attach to an evaluator whose postprocessing leaves ``image`` (LQ), ``pred`` and ``label`` in physical units;
    ``task`` and ``id`` come from the batch. At the end of the run it writes, in ``output_dir``:

    - ``metrics.csv``: one row per method and slice (method, task, id, psnr, ssim, rmse);
    - ``metrics.md``: the Table 1-shaped summary (also logged), under a header naming each network's weights file
      and its sha256;
    - ``figures/<method>_<task>_<n>.png``: LQ | restored | HQ | error of the first ``num_figures`` slices per task.

    In a distributed run (``multi_gpu_evaluate.json``) each rank records its shard; the rows are gathered and rank 0
    alone writes the report and the figures (of its shard's slices).

    Args:
        output_dir: report folder.
        method_name: row name of the evaluated network.
        methods: reference rows, name -> ``method(image, task)``; e.g. ``{"LQ input": lq_input}``. They come
            before the network in the table.
        num_figures: figures per task (0: none).
        tasks: task column order.
        task_key: key of the task in the batch.
        id_key: key of the slice id in the batch.
        weights: the evaluated network's weights file (named with its sha256 in the table's header).

    Raises:
        UserInputError: ``output_dir`` is a training run's folder.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        method_name: str = "AMIR",
        methods: Mapping[str, Method] | None = None,
        num_figures: int = 2,
        tasks: Sequence[str] = ("mri", "ct", "pet"),
        task_key: str = "task",
        id_key: str = "id",
        weights: str | os.PathLike | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        if folder_kind(self.output_dir) == RUN_KIND:
            raise UserInputError(
                f"{self.output_dir} is a training run's folder, which an evaluation never writes into; leave out "
                "--output_dir (a new evaluate- folder) or give another one."
            )
        self.method_name = method_name
        self.methods = dict(methods or {})
        if method_name in self.methods:
            raise ValueError(f"method_name {method_name!r} is also the name of a reference method.")
        self.num_figures = num_figures
        self.tasks = tuple(tasks)
        self.task_key = task_key
        self.id_key = id_key
        self.weights = Path(weights) if weights is not None else None
        self.rows: list[dict[str, str | float]] = []
        self._figures: dict[str, int] = {}
        self._weights: dict[str, str] | None = None

    def attach(self, engine: Engine) -> None:
        """Record every slice, write the report when the evaluation completes.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the slices recorded, and remove what a killed earlier report left half-written."""
        self.rows, self._figures = [], {}
        # the digest of the file as the run starts, when the loader has just read it
        if self.weights is not None:
            self._weights = {"path": os.fspath(self.weights.resolve()), "sha256": file_sha256(self.weights)}
        if _rank() == 0:
            remove_stale_temporaries(self.output_dir, recursive=True)

    def record(self, engine: Engine) -> None:
        """Metrics of every method on the slices of this iteration, and their figures."""
        batch, output = engine.state.batch, engine.state.output
        for item, out in zip(as_item_list(batch), as_item_list(output), strict=True):
            task, image, label = str(item[self.task_key]), out["image"], out["label"]
            slice_id = str(item.get(self.id_key, len(self.rows)))
            restorations = {name: method(image, task) for name, method in self.methods.items()}
            restorations[self.method_name] = out["pred"]
            for name, restored in restorations.items():
                values = restoration_metrics(restored, label, task)
                self.rows.append({"method": name, "task": task, "id": slice_id, **values})
            count = self._figures.get(task, 0)
            if count < self.num_figures and _rank() == 0:
                self._figures[task] = count + 1
                panel = restoration_panel(image, out["pred"], label, task)
                save_png(panel, self.output_dir / "figures" / f"{_slug(self.method_name)}_{task}_{count}.png")

    def write(self, engine: Engine | None = None) -> str:
        """Merge this run's rows into ``metrics.csv``, write ``metrics.md`` and log the table.

        Returns:
            The Markdown table (empty on the ranks other than 0 of a distributed run, which write nothing).
        """
        if dist.is_available() and dist.is_initialized():  # every rank's slices, in rank order
            shards: list[list[dict[str, str | float]] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(shards, self.rows)
            self.rows = [row for shard in shards for row in shard or []]
            if dist.get_rank() != 0:
                return ""
        if not self.rows:
            raise RuntimeError("RestorationReport: no slice was evaluated.")
        csv_path = self.output_dir / "metrics.csv"
        ours = set(self.methods) | {self.method_name}
        previous = [r for r in _read_rows(csv_path) if r["method"] not in ours]
        # reference rows first, then earlier runs' models, then this run's model
        rows = [r for r in self.rows if r["method"] in self.methods] + previous
        rows += [r for r in self.rows if r["method"] == self.method_name]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(buffer.getvalue(), csv_path)
        table = self._weights_header(rows) + markdown_table(rows, self.tasks)
        write_text_atomic(table, self.output_dir / "metrics.md")
        logger.info(f"Evaluation report in {self.output_dir}:\n{table}")
        return table

    def _weights_header(self, rows: Sequence[Mapping[str, str | float]]) -> str:
        """Lines naming the weights (path, sha256) of every network in ``rows``; updates ``weights.json``."""
        path = self.output_dir / WEIGHTS_FILE
        try:
            known = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            known = {}
        known = known if isinstance(known, dict) else {}
        if self._weights is not None:
            known[self.method_name] = self._weights
        present = {str(r["method"]) for r in rows}
        known = {m: w for m, w in known.items() if m in present and isinstance(w, dict)}
        if not known:
            return ""
        write_text_atomic(json.dumps(known, indent=2) + "\n", path)
        lines = [f"Weights of {m}: `{w.get('path')}`, sha256 `{w.get('sha256')}`  " for m, w in known.items()]
        return "\n".join(lines) + "\n\n"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _read_rows(path: Path) -> list[dict[str, str | float]]:
    """Rows of an existing ``metrics.csv`` (none if absent); a file of another layout is an error."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != _CSV_FIELDS:
            raise ValueError(f"{path}: not a metrics file of this bundle (columns {reader.fieldnames}).")
        rows = list(reader)
    for row in rows:
        for name in METRIC_NAMES:
            row[name] = float(row[name]) if row[name] not in ("", "nan") else math.nan
    return rows
