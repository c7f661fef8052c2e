"""Speed of the data layer on this machine's CPU: the demo-set build, ``LoadSlicePaird`` per item, the training loader.

``items`` measures, single-threaded, on synthetic files of the paper's sizes written to a temporary folder:

- the full demo build (``build_demo_set`` into a fresh folder);
- ``LoadSlicePaird`` per item: an IXI-like 256x256x130 ``.nii.gz`` slice with the k-space LQ, a paired 512x512 DICOM
  CT slice, a 512x512 slice with simulated quarter-dose CT noise, a 192x400 PET slice with simulated DRF 12;
- a ``PersistentDataset`` cache hit of the CT-simulation item (what every epoch after the first costs).

``loader`` measures the training loader of ``configs/train.json`` (``train#dataloader``: the on-disk cache of the
deterministic part, random 128x128 crops in the workers, batches of 8) once its cache is filled, in patches per
second, with 0 (the main process), 1 and 2 workers: on the demo set, and on 512x512 slice pairs (the size of the
CT data, the largest slices of the paper's training).

Usage (from the repository root)::

    .venv/bin/python bench/data.py                 # both
    .venv/bin/python bench/data.py --only loader
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _data_factories import make_mayo_tree  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402
from scripts.data import LoadSlicePaird, build_demo_set, build_mayo_datalist, make_dataset  # noqa: E402
from scripts.data.slices import affine_from_axcodes  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def training_loader(cache_dir: Path, num_workers: int, datalist: list | None = None):
    """``train#dataloader`` of configs/train.json on the demo set (or ``datalist``), batches of 8 of 128x128."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["dataset_dir"] = str(build_demo_set())
    parser["cache_dir"] = str(cache_dir)
    parser["num_workers"] = num_workers
    parser["pin_memory"] = False  # no GPU here
    if datalist is not None:
        parser["train#datalist"] = datalist
    return parser.get_parsed_content("train#dataloader")


def patches_per_second(loader, batches: int) -> float:
    """Patches per second over ``batches`` batches, after one pass that fills the cache and starts the workers."""
    for _ in loader:
        pass
    count, start, done = 0, time.perf_counter(), False
    while not done:
        for batch in loader:
            count += batch["image"].shape[0]
            if count >= 8 * batches:
                done = True
                break
    return count / (time.perf_counter() - start)


def loader_rates(root: Path) -> dict[str, float]:
    """Patches per second of the training loader, per number of workers, on the demo set and on 512x512 pairs."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(16):
        for kind in ("lq", "hq"):
            body = (rng.random((512, 512, 1), dtype=np.float32) * 1400 - 1000).astype(np.float32)
            nib.save(nib.Nifti1Image(body, affine_from_axcodes(("P", "L", "S"))), str(root / f"ct{i}_{kind}.nii.gz"))
        items.append({"image": str(root / f"ct{i}_lq.nii.gz"), "label": str(root / f"ct{i}_hq.nii.gz"), "task": "ct"})
    results: dict[str, float] = {}
    for name, datalist in (("demo", None), ("ct_512", items)):
        for workers in (0, 1, 2):
            loader = training_loader(root / f"cache_{name}", workers, datalist)
            results[f"loader_{name}_{workers}_workers_patches_per_s"] = patches_per_second(loader, batches=40)
            del loader  # ends its persistent workers
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("items", "loader"), help="measure one part only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, float] = {}
    if args.only != "loader":
        results.update(item_times())
    if args.only != "items":
        with tempfile.TemporaryDirectory() as tmp:
            results.update(loader_rates(Path(tmp)))
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=1))


def item_times() -> dict[str, float]:
    """Seconds of the demo build, of ``LoadSlicePaird`` per item and of a cache hit (single-threaded)."""
    rng = np.random.default_rng(0)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        build_demo_set(root / "demo")
        results["demo_build_s"] = time.perf_counter() - start

        mri = root / "IXI002-Guys-0828-T2.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((256, 256, 130), dtype=np.float32) * 1000, np.eye(4)), str(mri))
        ct = root / "ct.nii.gz"
        body = np.full((512, 512, 1), -1024.0, dtype=np.float32)
        yy, xx = np.mgrid[:512, :512]
        body[((yy - 256) ** 2 + (xx - 256) ** 2) < 200**2] = 40.0
        nib.save(nib.Nifti1Image(body, affine_from_axcodes(("P", "L", "S"))), str(ct))
        pet = root / "pet.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((192, 1, 400), dtype=np.float32) * 5, np.eye(4)), str(pet))
        make_mayo_tree(root / "mayo", "patient", ["L067"], n_slices=1, size=512)

        items = {
            "mri_kspace_256": {"label": str(mri), "slice": 65, "slice_axis": 2, "task": "mri", "degrade": "kspace"},
            "ct_paired_dicom_512": build_mayo_datalist(root / "mayo", "all")[0],
            "ct_simulated_512": {"label": str(ct), "task": "ct", "degrade": "ct"},
            "pet_simulated_192x400": {"label": str(pet), "task": "pet", "degrade": "pet", "drf": 12},
        }
        load = LoadSlicePaird()
        for name, item in items.items():
            results[f"load_{name}_s"] = best_of(lambda item=item: load(item))
        cached = make_dataset([items["ct_simulated_512"]], LoadSlicePaird(), cache_dir=root / "cache")
        cached[0]  # fills the cache
        results["persistent_cache_hit_512_s"] = best_of(lambda: cached[0], repeats=5)
    return results


if __name__ == "__main__":
    main()
