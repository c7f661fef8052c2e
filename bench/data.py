"""Speed of the data layer on this machine's CPU: the demo-set build and ``LoadSlicePaird`` per item.

Measures, single-threaded, on synthetic files of the paper's sizes written to a temporary folder:

- the full demo build (``build_demo_set`` into a fresh folder);
- ``LoadSlicePaird`` per item: an IXI-like 256x256x130 ``.nii.gz`` slice with the k-space LQ, a paired 512x512 DICOM
  CT slice, a 512x512 slice with simulated quarter-dose CT noise, a 192x400 PET slice with simulated DRF 12;
- a ``PersistentDataset`` cache hit of the CT-simulation item (what every epoch after the first costs).

Usage (from the repository root)::

    .venv/bin/python bench/data.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _data_factories import make_mayo_tree  # noqa: E402
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


def main() -> None:
    torch.set_num_threads(1)
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
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
