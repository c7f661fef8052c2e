"""MONAI Label's bundle training task on train.json: ``{image, label}`` volumes with the high-quality image as label.

MONAI Label cannot be installed beside the CPU torch pin; this module gives ``monai.bundle.run`` the overrides its
``BundleTrainTask`` (monailabel/tasks/train/bundle.py) gives for a single-GPU run: ``bundle_root``,
``train#trainer#max_epochs``, ``train#dataset#data``, ``validate#dataset#data``, ``device`` and
``train#handlers`` with a ``CheckpointLoader`` of ``models/model.pt`` put first. Label's items are whole
volumes and carry no task: the modality comes from the config's ``modality`` (set by the Label app, as for
inference). The remaining overrides only make the run small (network, iterations, patch and batch size).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import monai.bundle
import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from scripts.networks import AMIR

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
TINY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "num_atoms": 4, "atom_dim": 16}


def write_pairs(folder: Path, count: int) -> list[dict[str, str]]:
    """Label's datalist: low-dose CT volumes as images, their full-dose volumes as labels (HU, 3 slices)."""
    rng = np.random.default_rng(0)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    items = []
    for i in range(count):
        hq = (rng.normal(0.0, 50.0, (48, 40, 3)) + np.linspace(-500, 500, 40)[None, :, None]).astype(np.float32)
        lq = hq + rng.normal(0.0, 30.0, hq.shape).astype(np.float32)
        image, label = folder / f"case{i}_lq.nii.gz", folder / f"case{i}_hq.nii.gz"
        nib.save(nib.Nifti1Image(lq, affine), str(image))
        nib.save(nib.Nifti1Image(hq, affine), str(label))
        items.append({"image": str(image), "label": str(label)})
    return items


def test_label_training_overrides_run(tmp_path, monkeypatch, restore_logging):
    monkeypatch.chdir(tmp_path)  # MONAI Label parses the bundle from its own working directory
    data = tmp_path / "datastore"
    data.mkdir()
    items = write_pairs(data, 3)
    bundle_root = tmp_path / "bundle"
    (bundle_root / "models").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(AMIR(**TINY).state_dict(), bundle_root / "models" / "model.pt")

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    handlers = copy.deepcopy(parser.get("train#handlers", []))
    handlers.insert(  # what Label adds with "pretrained": true
        0,
        {
            "_target_": "CheckpointLoader",
            "load_path": str(bundle_root / "models" / "model.pt"),
            "load_dict": {"model": "$@network"},
            "strict": False,
        },
    )
    overrides = {
        "bundle_root": str(bundle_root),
        "train#trainer#max_epochs": 1,
        "train#dataset#data": items[:2],
        "validate#dataset#data": items[2:],
        "device": "cpu",
        "train#handlers": handlers,
        # the Label app's setting: its items carry no task
        "modality": "ct",
        # small run
        "network_def": {"_target_": "scripts.networks.AMIR", **TINY},
        "val_interval": 2,
        "batch_size": 2,
        "patch_size": [32, 32],
        "num_workers": 0,
    }
    try:
        monai.bundle.run(
            run_id="run",
            init_id=None,
            final_id=None,
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            config_file=str(BUNDLE / "configs" / "train.json"),
            **overrides,
        )
    finally:
        set_determinism(seed=None)
    written = sorted(p.name for p in (bundle_root / "runs").rglob("*.pt"))
    assert written, "training wrote no checkpoint"
    assert json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
