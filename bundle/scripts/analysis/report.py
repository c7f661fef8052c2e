"""Writes the analysis folder: tables (CSV, Markdown), arrays (NPZ), figures (PNG) and ``report.md`` linking them.

Files (those of a part the network lacks, or that was not measured, are not written):

- ``expert_use.csv``, ``expert_use.md``, ``expert_use_<srm>.png`` (one heat map per SRM), ``expert_use.png`` (all
  SRMs side by side), ``balance_loss.csv``;
- ``instructions.npz`` (``instruction`` (N, D), ``task`` (N,), ``id`` (N,)), ``instruction_embedding.csv`` and
  ``.png``, ``instruction_separability.png``;
- ``channel_masks.npz`` (``tasks`` and one ``(T, C)`` array of mean masks per CRM), ``channel_masks.png``,
  ``channel_mask_distances.csv`` and ``.png``;
- ``interference.csv``, ``interference_<model>.png``, ``interference.png`` (all models, one colour scale);
- ``report.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .analyze import AnalysisResults
from .output import prepare_output_dir, write_csv, write_npz, write_png, write_text
from .plots import heatmap, scatter, side_by_side, stacked

__all__ = ["write_report"]

_INTERFERENCE_DEFINITION = """\
`relative[i, j]` = (L_j(theta') - L_j(theta)) / L_j(theta), with theta' = theta - lr * g_i / ||g_i||: the relative
change of task j's loss (mean L1 on held-out slices of j, the training loss without its balance term) after one
normalised gradient step of length lr on a batch of task i, over all parameters of the network (all of them are
shared by the tasks), averaged over the step batches of i; network in eval mode. Negative: the step on i also lowers
j's loss; positive: it raises it (interference). The paper's supplement (Fig. I(b)) uses the metric of
Uni-Perceiver-MoE (Zhu et al., NeurIPS 2022), whose normalised form `1 - dL_j(step on i) / dL_j(step on j)`
(dL: decrease of the loss) is in `interference.csv` (column `normalised`, empty where j's own step does not lower
its loss). The paper gives neither its step size, its batches nor its parameter set, so its values are not
reproduced here; this report measures the same kind of quantity on this model and data."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _counts(results: AnalysisResults) -> str:
    return ", ".join(f"{t} {results.slice_tasks.count(t)}" for t in results.tasks)


def _expert_use(out: Path, results: AnalysisResults) -> list[str]:
    use, tasks = results.expert_use, results.tasks
    if use is None:
        return ["## Expert use (SRM)", "", "The network has no spatial routing modules."]
    write_csv(out / "expert_use.csv", use.rows(tasks))
    balance = use.balance_rows(tasks)
    write_csv(out / "balance_loss.csv", balance)
    table = use.markdown(tasks)
    write_text(out / "expert_use.md", table)
    figures = []
    for level in use.levels:
        fractions = use.fractions(level, tasks)
        k = int(round(fractions[0].sum()))
        figure = heatmap(
            fractions, tasks, [f"e{e}" for e in range(use.num_experts[level])],
            f"{level}: tokens routed to each expert (top-{k})", vmin=0.0, vmax=1.0, cell=(52, 30),
            row_title="task", col_title="expert",
        )  # fmt: skip
        write_png(out / f"expert_use_{level}.png", figure)
        figures.append(figure)
    write_png(out / "expert_use.png", side_by_side(figures))
    lines = [
        "## Expert use (SRM)",
        "",
        "Fraction of each task's tokens (pixels of the SRM's feature map) that have an expert among their top-k "
        "(each token counts once for each of its k experts, so a row sums to k); balance loss "
        "`cv2(importance) + cv2(load)` over all of the task's tokens, as the SRM computes it in eval mode "
        "([expert_use.csv](expert_use.csv), [balance_loss.csv](balance_loss.csv)).",
        "",
        table,
        "| task | " + " | ".join(use.levels) + " | total |",
        "|---|" + "---|" * (len(use.levels) + 1),
    ]
    for row in balance:
        lines.append(f"| {row['task']} | " + " | ".join(f"{float(row[v]):.4f}" for v in [*use.levels, "total"]) + " |")
    lines += ["", "![expert use](expert_use.png)", ""]
    lines += [f"[{level}](expert_use_{level}.png)" for level in use.levels]
    return lines


def _instructions(out: Path, results: AnalysisResults) -> list[str]:
    if results.instructions is None:
        return ["## Instructions (RIN)", "", "The network has no routing instruction network."]
    write_npz(
        out / "instructions.npz",
        instruction=results.instructions,
        task=np.array(results.slice_tasks, dtype=str),
        id=np.array(results.slice_ids, dtype=str),
    )
    lines = [
        "## Instructions (RIN)",
        "",
        f"The instruction of each of the {len(results.slice_ids)} slices is in [instructions.npz](instructions.npz) "
        "(`instruction` (N, D), `task`, `id`; `numpy.load` without pickle).",
    ]
    if results.embedding is not None:
        coords, method = results.embedding
        rows = [
            {"id": i, "task": t, "x": float(x), "y": float(y)}
            for i, t, (x, y) in zip(results.slice_ids, results.slice_tasks, coords, strict=True)
        ]
        write_csv(out / "instruction_embedding.csv", rows)
        title = f"{method} of the RIN instructions, by task"
        write_png(out / "instruction_embedding.png", scatter(coords, results.slice_tasks, title, xlabel=method))
        lines += ["", "![instruction embedding](instruction_embedding.png) ([coordinates](instruction_embedding.csv))"]
    sep = results.separability
    if sep is None:
        lines += ["", "Task separability: needs at least two tasks with two slices each."]
    else:
        title = f"nearest-centroid task from instruction, {sep.folds}-fold CV: accuracy {sep.accuracy:.3f}"
        figure = heatmap(
            sep.confusion, sep.tasks, sep.tasks, title, fmt="{:.0f}", cell=(52, 30),
            row_title="true", col_title="predicted",
        )  # fmt: skip
        write_png(out / "instruction_separability.png", figure)
        lines += [
            "",
            f"Task separability: a nearest-centroid classifier of the task from the instruction, {sep.folds}-fold "
            f"cross-validated (contiguous blocks of each task's slices), is right for **{sep.accuracy:.1%}** of the "
            f"slices (always guessing the largest task: {sep.chance:.1%}).",
            "",
            "![task separability](instruction_separability.png)",
        ]
    return lines


def _channel_masks(out: Path, results: AnalysisResults) -> list[str]:
    masks, tasks = results.masks, results.tasks
    if masks is None:
        return ["## Channel routing (CRM)", "", "The network has no channel routing modules."]
    means = {crm: masks.means(crm, tasks) for crm in masks.crms}
    write_npz(out / "channel_masks.npz", tasks=np.array(tasks, dtype=str), **means)
    fields = ["crm", "task_a", "task_b", "distance"]
    write_csv(out / "channel_mask_distances.csv", masks.distance_rows(tasks), fields)
    strips = []
    for crm, mean in means.items():
        cell = (max(2, min(12, 512 // mean.shape[1])), 18)
        strips.append(
            heatmap(mean, tasks, [str(c) for c in range(mean.shape[1])], f"{crm}: mean mask per channel",
                    vmin=0.0, vmax=1.0, cell=cell, annotate=False)
        )  # fmt: skip
    write_png(out / "channel_masks.png", stacked(strips))
    distances = [
        heatmap(masks.distances(crm, tasks), tasks, tasks, crm, fmt="{:.3f}", vmin=0.0, cell=(52, 30))
        for crm in masks.crms
    ]
    write_png(out / "channel_mask_distances.png", side_by_side(distances))
    return [
        "## Channel routing (CRM)",
        "",
        "Per task, the mean channel mask `sigmoid(fc(instruction))` of each CRM "
        "([channel_masks.npz](channel_masks.npz)); "
        "distance between two tasks: root-mean-square difference of their mean masks over the channels "
        "([channel_mask_distances.csv](channel_mask_distances.csv)).",
        "",
        masks.markdown(tasks),
        "![channel masks](channel_masks.png)",
        "",
        "![mask distances](channel_mask_distances.png)",
    ]


def _interference(out: Path, results: AnalysisResults, settings: Mapping[str, Any]) -> list[str]:
    if not results.interference:
        return ["## Task interference", "", "Not measured (`interference#num_batches` 0)."]
    options = settings.get("interference") or {}
    rows = []
    lines = [
        "## Task interference",
        "",
        _INTERFERENCE_DEFINITION,
        "",
        f"Step length lr = {options.get('step_size')}, batches of {options.get('batch_size')} slices; "
        "losses measured on the slices that follow the step batches of each task "
        "([interference.csv](interference.csv)).",
    ]
    bound = max(float(np.abs(r.relative).max()) for r in results.interference.values())
    figures = []
    for name, result in results.interference.items():
        rows += result.rows(name)
        figure = heatmap(
            result.relative, result.tasks, result.tasks, f"{name}: relative change of the loss after a step",
            fmt="{:+.1e}", vmin=-bound, vmax=bound, diverging=True, cell=(72, 30), row_title="step on",
            col_title="loss of",
        )  # fmt: skip
        write_png(out / f"interference_{_slug(name)}.png", figure)
        figures.append(figure)
        lines += [
            "",
            f"### {name}",
            "",
            f"{result.num_batches} step batch(es) per task; loss before the steps: "
            + ", ".join(f"{t} {v:.5f}" for t, v in zip(result.tasks, result.loss, strict=True)),
            "",
            result.markdown(),
            "Normalised (Uni-Perceiver-MoE form; 0: helps j as much as j's own step, 1: does not change j's loss):",
            "",
            result.markdown(normalised=True),
            f"![interference {name}](interference_{_slug(name)}.png)",
        ]
    write_png(out / "interference.png", side_by_side(figures))
    lines += ["", "All models on one colour scale: ![interference](interference.png)"]
    write_csv(out / "interference.csv", rows)
    return lines


def write_report(output_dir: str | os.PathLike, results: AnalysisResults, settings: Mapping[str, Any]) -> Path:
    """Write every table, array and figure of ``results`` and ``report.md`` into ``output_dir``.

    Args:
        output_dir: the analysis folder (created and marked as the bundle's).
        results: what :class:`scripts.analysis.RoutingAnalysis` measured.
        settings: ``model_name``, ``ckpt_path``, ``ckpt_sha256``, ``restormer_name``, ``restormer_ckpt_path``,
            ``restormer_sha256``, ``interference``.

    Returns:
        The path of ``report.md``.
    """
    out = prepare_output_dir(output_dir)
    compared = settings.get("restormer_ckpt_path")
    header = [
        f"# Routing analysis of {settings.get('model_name', 'the network')}",
        "",
        f"Weights: `{settings.get('ckpt_path')}` (sha256 `{settings.get('ckpt_sha256')}`)"
        + (
            f"; {settings.get('restormer_name')} for comparison: `{compared}` "
            f"(sha256 `{settings.get('restormer_sha256')}`)"
            if compared
            else ""
        )
        + f". Slices analysed: {len(results.slice_ids)} ({_counts(results)}).",
        "",
        "Computed by `configs/analyze.json` (`scripts.analysis`); stage times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results.seconds.items())
        + ".",
    ]
    sections = [
        _expert_use(out, results),
        _instructions(out, results),
        _channel_masks(out, results),
        _interference(out, results, settings),
    ]
    text = "\n".join(header) + "\n\n" + "\n\n".join("\n".join(s) for s in sections) + "\n"
    return write_text(out / "report.md", text)
