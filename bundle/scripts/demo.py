"""The demo: restore the embedded demo set's test images with the shipped weights and print the results table.

``bash run.sh demo`` runs ``python -m scripts.demo`` in ``bundle/``. Nothing is downloaded and no GPU is needed:

1. the demo set (:mod:`scripts.data.demo`, the real-image corpus) is built if missing (about 20 s);
2. ``configs/evaluate.json`` evaluates the shipped weights on its test split, with the LQ input and the classical
   baseline (CT / PET denoisers tuned on the demo's validation split) as reference rows, and the same-size
   Restormer of ``models/baselines/restormer_demo.pt`` when present, writing ``metrics.csv``, ``metrics.md`` and
   figures (LQ | restored | HQ | error) to ``<output_dir>/``;
3. ``configs/inference.json`` restores the test LQ inputs, NIfTI in and out, into ``<output_dir>/restored/<task>/``;
4. the table is printed.

Every step runs a bundle config through ``monai.bundle.run``; nothing here re-implements them. Outputs are written
atomically by the workflows, so an interrupted demo leaves no partial file, and a repeated one overwrites.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import run as bundle_run
from monai.data import load_decathlon_datalist

from .data import TASKS, build_demo_set

__all__ = ["BUNDLE_ROOT", "DEFAULT_OUTPUT_DIR", "RESTORMER_DEMO", "evaluate", "restore_folder", "stage_inputs", "main"]

#: The bundle folder (holds configs/ and models/).
BUNDLE_ROOT = Path(__file__).resolve().parents[1]
#: Where the demo writes by default: the repository's ``outputs/demo`` (ignored by git).
DEFAULT_OUTPUT_DIR = BUNDLE_ROOT.parent / "outputs" / "demo"
#: The same-size Restormer trained with the same recipe as the shipped AMIR weights: (row name, weights, network).
RESTORMER_DEMO: tuple[str, Path, dict[str, Any]] = (
    "Restormer (same size)",
    BUNDLE_ROOT / "models" / "baselines" / "restormer_demo.pt",
    {"_target_": "scripts.networks.demo_restormer"},
)

logger = logging.getLogger(__name__)


def _config(name: str) -> str:
    return os.fspath(BUNDLE_ROOT / "configs" / name)


def _run_config(config: str, **override: Any) -> None:
    """Run a bundle config's ``run`` expression from the bundle folder (where its relative paths point)."""
    cwd = os.getcwd()
    os.chdir(BUNDLE_ROOT)
    try:
        bundle_run(run_id="run", config_file=_config(config), logging_file=_config("logging.conf"), **override)
    finally:
        os.chdir(cwd)


def evaluate(
    output_dir: str | os.PathLike,
    demo_dir: str | os.PathLike,
    models: Sequence[tuple[str, str | os.PathLike, Mapping[str, Any] | None]],
    num_figures: int = 2,
    split: str = "test",
) -> str:
    """Evaluate networks on a split of the demo set with ``configs/evaluate.json``, one run per network.

    The runs share ``output_dir``, so the table gathers them: LQ input, classical baseline, then the networks in
    the order given. Only the first run computes the reference rows (the classical baseline is tuned once); the
    later ones keep them from ``metrics.csv``.

    Args:
        output_dir: report folder (``metrics.csv``, ``metrics.md``, ``figures/``).
        demo_dir: the demo set's folder.
        models: ``(row name, weights, network_def or None for the one of configs/inference.json)`` per network.
        num_figures: figures per task and network.
        split: the demo split evaluated.

    Returns:
        The Markdown table (``metrics.md``).
    """
    output_dir = Path(output_dir).resolve()
    for index, (name, weights, network_def) in enumerate(models):
        override: dict[str, Any] = {
            "dataset": "demo",
            "dataset_dir": os.fspath(Path(demo_dir).resolve()),
            "split": split,
            "ckpt_path": os.fspath(Path(weights).resolve()),
            "output_dir": os.fspath(output_dir),
            "model_name": name,
            "num_figures": num_figures,
            "num_workers": 0,
        }
        if network_def is not None:
            override["network_def"] = dict(network_def)
        if index > 0:
            override["methods"] = {}
        _run_config("evaluate.json", **override)
    return (output_dir / "metrics.md").read_text()


def stage_inputs(demo_dir: str | os.PathLike, staging_dir: str | os.PathLike, split: str = "test") -> dict[str, Path]:
    """Copy the LQ images of a demo split into one folder per task, as a user's input folders would be.

    Args:
        demo_dir: the demo set's folder.
        staging_dir: where ``<task>/<name>_lq.nii.gz`` are copied (replaced if present).
        split: the demo split.

    Returns:
        Task -> its input folder, for the tasks with images.
    """
    items = load_decathlon_datalist(Path(demo_dir) / "datalist.json", False, split, base_dir=demo_dir)
    folders: dict[str, Path] = {}
    for item in items:
        folder = Path(staging_dir) / item["task"]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item["image"], folder / Path(item["image"]).name)
        folders[item["task"]] = folder
    return folders


def restore_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike, modality: str) -> None:
    """Restore every image of a folder with ``configs/inference.json`` and the shipped weights (NIfTI out).

    Args:
        input_dir: folder of NIfTI / DICOM inputs of one modality.
        output_dir: folder of the ``*_restored.nii.gz`` outputs (existing ones are overwritten).
        modality: "mri", "ct" or "pet".

    Raises:
        SystemExit: an input failed (the inference config exits with status 1).
    """
    _run_config(
        "inference.json",
        dataset_dir=os.fspath(Path(input_dir).resolve()),
        output_dir=os.fspath(Path(output_dir).resolve()),
        modality=modality,
        overwrite=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (``python -m scripts.demo --help``).

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=os.fspath(DEFAULT_OUTPUT_DIR), help="where results go")
    parser.add_argument("--demo_dir", default=None, help="demo set folder (default: $AMIR_DEMO_DIR or the cache)")
    parser.add_argument("--num_figures", type=int, default=2, help="figures per task and network")
    parser.add_argument("--no_restormer", action="store_true", help="leave out the Restormer row")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    output_dir = Path(args.output_dir).resolve()

    print("AMIR demo: building the demo set if missing ...", flush=True)
    demo_dir = build_demo_set(args.demo_dir)
    models: list[tuple[str, str | os.PathLike, Mapping[str, Any] | None]] = []
    name, weights, network_def = RESTORMER_DEMO
    if not args.no_restormer and weights.is_file():
        models.append((name, weights, network_def))
    models.append(("AMIR (demo weights)", BUNDLE_ROOT / "models" / "model.pt", None))
    print(f"AMIR demo: evaluating {', '.join(m[0] for m in models)} on the demo test split ...", flush=True)
    table = evaluate(output_dir, demo_dir, models, num_figures=args.num_figures)

    print("AMIR demo: restoring the test LQ images (NIfTI in, NIfTI out) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix=".inputs-", dir=output_dir) as staging:
        for task, folder in stage_inputs(demo_dir, staging).items():
            restore_folder(folder, output_dir / "restored" / task, task)

    print(f"\nDemo test split, {', '.join(TASKS)} (PSNR / SSIM in the released code's units; RMSE in HU for CT,")
    print("SUV for PET, scanner units for MRI):\n")
    print(table)
    print(f"Table: {output_dir / 'metrics.md'} (per slice: metrics.csv)")
    print(f"Figures (LQ | restored | HQ | error): {output_dir / 'figures'}")
    print(f"Restored NIfTI images: {output_dir / 'restored'}")
    print(f"Done in {time.perf_counter() - start:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
