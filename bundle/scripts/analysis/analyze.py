"""The routing and task-interference analysis of a trained AMIR: what ``configs/analyze.json`` runs.

One forward pass per slice (in eval mode) records, through forward hooks, each slice's instruction, every SRM's
top-k experts per token and every CRM's channel mask; then the interference of the tasks is measured on the AMIR
and, when given, on a Restormer. :mod:`scripts.analysis.report` writes the results.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.datasets import slice_items
from ..data.slices import TASKS
from ..errors import UserInputError
from ..weights import file_sha256, load_weights
from .capture import RoutingRecorder
from .channel_masks import ChannelMasks
from .expert_use import ExpertUse
from .instructions import Separability, embed_2d, nearest_centroid_cv
from .interference import InterferenceResult, interference_sets, task_interference
from .output import check_output_dir

__all__ = ["Slice", "AnalysisResults", "spread_per_task", "load_network_weights", "RoutingAnalysis"]

logger = logging.getLogger(__name__)


def spread_per_task(items: Sequence[Mapping[Hashable, Any]], max_per_task: int | None = None) -> list[dict]:
    """At most ``max_per_task`` slice items per task, evenly spread over each task's items (order kept).

    Whole-volume items are cut into slices first (:func:`scripts.data.datasets.slice_items`), so the choice spreads
    over volumes and over the slices within them rather than taking the first slices of the first volume.

    Args:
        items: data-list items (:func:`scripts.data.build_datalist`).
        max_per_task: the most slices per task; None: all.

    Returns:
        The chosen slice items, in their original order.
    """
    items = slice_items(items)
    if max_per_task is None:
        return items
    if max_per_task < 1:
        raise UserInputError(f"max_per_task must be at least 1 (or null for all slices), got {max_per_task}")
    keep: set[int] = set()
    for task in dict.fromkeys(str(item["task"]) for item in items):
        rows = [i for i, item in enumerate(items) if item["task"] == task]
        picks = np.unique(np.linspace(0, len(rows) - 1, min(max_per_task, len(rows))).round().astype(int))
        keep.update(rows[k] for k in picks)
    return [item for i, item in enumerate(items) if i in keep]


def load_network_weights(network: nn.Module, ckpt_path: str | os.PathLike, device: torch.device | str) -> nn.Module:
    """Load a state dict (or a training checkpoint holding one under ``"model"``), verified, strictly.

    Raises:
        UserInputError: the file cannot be loaded or does not fit the network (:func:`scripts.weights.load_weights`).
    """
    return load_weights(network, ckpt_path, map_location=device)


def _plain(x: Any) -> torch.Tensor:
    """A float32 torch tensor (a MetaTensor's data without its metadata)."""
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.float()


@dataclass
class Slice:
    """One analysed slice: its task, id and the normalised ``(1, 1, H, W)`` LQ image and HQ label."""

    task: str
    id: str
    image: torch.Tensor
    label: torch.Tensor


@dataclass
class AnalysisResults:
    """Everything the report shows.

    Attributes:
        tasks: tasks analysed, in order.
        slice_tasks, slice_ids: task and id of every slice, in analysis order.
        instructions: ``(N, atom_dim)`` instruction per slice; None for a network without routing.
        expert_use: per-task SRM expert use; None without SRMs.
        masks: per-task CRM masks; None without CRMs.
        embedding: ``(N, 2)`` instruction embedding and its method's name.
        separability: nearest-centroid task classification from the instruction (None when not computable).
        interference: model name -> its task interference.
        seconds: wall time of each stage.
    """

    tasks: list[str]
    slice_tasks: list[str]
    slice_ids: list[str]
    instructions: np.ndarray | None = None
    expert_use: ExpertUse | None = None
    masks: ChannelMasks | None = None
    embedding: tuple[np.ndarray, str] | None = None
    separability: Separability | None = None
    interference: dict[str, InterferenceResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class RoutingAnalysis:
    """Expert use, instructions, channel masks and task interference of a trained AMIR, written as a report.

    Args:
        network: the AMIR (any network with the bundle's routing modules; without any, only interference).
        ckpt_path: its weights.
        data: slice items after loading and windowing (``image``, ``label`` ``(1, H, W)`` in [0, 1], ``task``,
            ``id``), e.g. :func:`scripts.data.make_dataset` with ``LoadSlicePaird`` and ``IntensityWindowd``.
        output_dir: the analysis folder (new, empty or an earlier analysis folder).
        tasks: tasks to analyse, in table order; slices of other tasks are skipped.
        device: where the networks run.
        model_name: the network's name in the report.
        restormer: a network without routing to compare the interference with (None: none).
        restormer_ckpt_path: its weights (None: no comparison).
        restormer_name: its name in the report.
        embedding: ``"tsne"`` or ``"pca"`` (see :func:`scripts.analysis.instructions.embed_2d`).
        folds: the most cross-validation folds of the separability.
        interference: options of the interference measurement: ``step_size``, ``batch_size``, ``num_batches``,
            ``eval_slices`` (see :func:`scripts.analysis.interference.interference_sets`); None or
            ``{"num_batches": 0}`` to skip it.
        progress: show progress bars.
    """

    def __init__(
        self,
        network: nn.Module,
        ckpt_path: str | os.PathLike,
        data: Sequence[Mapping[Hashable, Any]],
        output_dir: str | os.PathLike,
        tasks: Sequence[str] = TASKS,
        device: torch.device | str = "cpu",
        model_name: str = "AMIR",
        restormer: nn.Module | None = None,
        restormer_ckpt_path: str | os.PathLike | None = None,
        restormer_name: str = "Restormer",
        embedding: str = "tsne",
        folds: int = 5,
        interference: Mapping[str, float] | None = None,
        progress: bool = True,
    ) -> None:
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise UserInputError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
        if embedding not in ("tsne", "pca"):
            raise UserInputError(f"embedding must be 'tsne' or 'pca', got {embedding!r}")
        if restormer is not None and restormer_ckpt_path and model_name == restormer_name:
            raise UserInputError(f"model_name and restormer_name are both {model_name!r}")
        self.network, self.ckpt_path, self.data = network, ckpt_path, data
        self.output_dir = Path(output_dir)
        self.tasks = list(tasks)
        self.device = torch.device(device)
        self.model_name = model_name
        self.restormer = restormer if restormer_ckpt_path else None
        self.restormer_ckpt_path = restormer_ckpt_path if restormer is not None else None
        self.restormer_name = restormer_name
        self.embedding = embedding
        self.folds = int(folds)
        options = {"step_size": 1e-5, "batch_size": 4, "num_batches": 2, "eval_slices": 8, **(interference or {})}
        if not float(options["step_size"]) > 0 or min(int(options[k]) for k in ("batch_size", "eval_slices")) < 1:
            raise UserInputError(f"interference needs step_size > 0, batch_size and eval_slices >= 1, got {options}")
        self.interference = options if interference is not None and int(options["num_batches"]) > 0 else None
        self.progress = progress

    def run(self) -> Path:
        """Analyse and write the report.

        Returns:
            The path of ``report.md``.
        """
        from .report import write_report

        check_output_dir(self.output_dir)  # before any work: a folder we may not write stops the run at once
        start = time.perf_counter()
        network = load_network_weights(self.network, self.ckpt_path, self.device)
        restormer = None
        if self.restormer is not None:
            restormer = load_network_weights(self.restormer, self.restormer_ckpt_path, self.device)
        slices = self.load_slices()
        loading = time.perf_counter() - start
        results = self.routing(network, slices)
        results.seconds = {"loading": loading, **results.seconds}
        if self.interference is not None:
            models = {self.model_name: network}
            if restormer is not None:
                models[self.restormer_name] = restormer
            for name, model in models.items():
                t0 = time.perf_counter()
                results.interference[name] = self.measure_interference(name, model, slices)
                results.seconds[f"interference {name}"] = time.perf_counter() - t0
        report = write_report(self.output_dir, results, self.settings())
        logger.info(f"Routing analysis in {self.output_dir} ({time.perf_counter() - start:.0f} s): {report}")
        return report

    def settings(self) -> dict[str, Any]:
        """What the report states about the run."""
        return {
            "model_name": self.model_name,
            "ckpt_path": os.fspath(self.ckpt_path),
            "ckpt_sha256": file_sha256(self.ckpt_path),
            "restormer_name": self.restormer_name if self.restormer is not None else None,
            "restormer_ckpt_path": os.fspath(self.restormer_ckpt_path) if self.restormer is not None else None,
            "restormer_sha256": file_sha256(self.restormer_ckpt_path) if self.restormer is not None else None,
            "interference": self.interference,
            "folds": self.folds,
        }

    def load_slices(self) -> list[Slice]:
        """Load (and window) every item of the analysed tasks."""
        slices = []
        for k in tqdm(range(len(self.data)), desc="loading slices", disable=not self.progress):
            item = self.data[k]
            task = str(item["task"])
            if task not in self.tasks:
                continue
            image, label = (_plain(item[key])[None].to(self.device) for key in ("image", "label"))
            slices.append(Slice(task, str(item.get("id", k)), image, label))
        present = [t for t in self.tasks if any(s.task == t for s in slices)]
        if not present:
            raise UserInputError(f"the data list holds no slice of the tasks {self.tasks}")
        missing = [t for t in self.tasks if t not in present]
        if missing:
            logger.warning(f"no slices of {missing} in the data list: they are left out of the analysis")
        self.tasks = present
        return slices

    def routing(self, network: nn.Module, slices: Sequence[Slice]) -> AnalysisResults:
        """One eval-mode forward per slice, recording instructions, expert choices and channel masks."""
        network.eval()
        recorder = RoutingRecorder(network)
        results = AnalysisResults(self.tasks, [s.task for s in slices], [s.id for s in slices])
        t0 = time.perf_counter()
        if not recorder.has_routing:
            logger.warning(f"{self.model_name} has no routing modules: only the task interference is measured")
            results.seconds["routing"] = 0.0
            return results
        use = ExpertUse({n: m.num_experts for n, m in recorder.srms.items()}) if recorder.srms else None
        masks = ChannelMasks(list(recorder.crms)) if recorder.crms else None
        instructions = []
        with recorder, torch.no_grad():
            for s in tqdm(slices, desc="routing", disable=not self.progress):
                network(s.image)
                record = recorder.last
                instructions.append(record.instruction[0].numpy())
                for level, (top_idx, gates) in record.experts.items():
                    use.add(s.task, level, top_idx, gates)
                for crm, mask in record.masks.items():
                    masks.add(s.task, crm, mask)
        results.instructions = np.stack(instructions).astype(np.float32)
        results.expert_use, results.masks = use, masks
        results.embedding = embed_2d(results.instructions, self.embedding)
        results.separability = nearest_centroid_cv(results.instructions, results.slice_tasks, self.folds)
        results.seconds["routing"] = time.perf_counter() - t0
        return results

    def measure_interference(self, name: str, network: nn.Module, slices: Sequence[Slice]) -> InterferenceResult:
        """The task interference of ``network`` on the slices (see :mod:`scripts.analysis.interference`)."""
        options = self.interference
        by_task = {t: [(s.image, s.label) for s in slices if s.task == t] for t in self.tasks}
        steps, evals = interference_sets(
            by_task, int(options["batch_size"]), int(options["num_batches"]), int(options["eval_slices"])
        )
        total = len(steps) * min(len(b) for b in steps.values())
        with tqdm(total=total, desc=f"interference {name}", disable=not self.progress) as bar:
            return task_interference(network, steps, evals, float(options["step_size"]), progress=bar.update)
