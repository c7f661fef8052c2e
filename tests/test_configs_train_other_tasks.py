"""train.json on a folder of one task: every validation reports all three tasks (the others on the demo set's
validation split, labelled ``demo_``), the key metric stays the trained task's; ``mix_demo`` draws a share of each
batch from the demo set's other tasks. One tiny fine-tuning run (2 iterations) shared."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from _workflow_data import (
    BUNDLE,
    TINY_NETWORK,
    bundle_command,
    demo_dir,
    identity_weights,
    run_side_by_side,
    tiny_network_config,
    write_nifti,
)
from monai.bundle import ConfigParser
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TASKS = ("mri", "ct", "pet")
SMALL = ["--batch_size", "2", "--patch_size", "[32,32]", "--val_interval", "2", "--num_val_slices", "1"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An MRI-only folder of 3 high-quality NIfTI volumes, a tiny network and weights to fine-tune it from."""
    root = tmp_path_factory.mktemp("other_tasks")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_nifti(root / "site" / "mri" / f"subject{i}.nii.gz", rng.uniform(0, 500, (32, 32, 3)), np.eye(4))
    identity_weights(root / "parent.pt")
    demo_dir()  # built once, outside the timed runs
    return root, tiny_network_config(root / "network.json")


def train_command(root, network, run_name, *args):
    return bundle_command(
        "training", "--config_file", "configs/train.json", "--dataset", "folder", "--dataset_dir",
        str(root / "site"), "--tasks", "['mri']", "--runs_dir", str(root / "runs"), "--run_name", run_name,
        "--network_def", network, "--init_ckpt", str(root / "parent.pt"), "--num_workers", "0",
        "--vary_degradations", "False", "--num_iterations", "2", *SMALL, *args,
    )  # fmt: skip


@pytest.fixture(scope="module")
def finetuned(site):
    """Two iterations fine-tuning on the MRI folder, half of each batch from the demo set's CT and PET."""
    root, network = site
    (result,) = run_side_by_side([train_command(root, network, "ft", "--mix_demo", "0.5")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "runs" / "ft", result.stdout + result.stderr


def test_each_validation_reports_all_three_tasks_labelled_by_their_data(finetuned):
    run, log = finetuned
    metrics_line = next(line for line in log.splitlines() if "Epoch[1] Metrics --" in line)
    for name in ("val_psnr_mri", "val_ssim_mri", "demo_val_psnr_ct", "demo_val_ssim_ct", "demo_val_psnr_pet"):
        assert f"{name}: " in metrics_line
    assert "val_psnr_ct" not in metrics_line.replace("demo_val_psnr_ct", "")
    assert "ct: demo (demo_val_*_ct)" in log and "Key metric val_psnr: mean PSNR of mri" in log

    record = json.loads((run / "validation.json").read_text())
    assert {t: s["data"] for t, s in record["sources"]["tasks"].items()} == {
        "mri": "folder",
        "ct": "demo",
        "pet": "demo",
    }
    (validation,) = record["validations"]
    values = validation["metrics"]
    assert validation["iteration"] == 2 and values["val_psnr"] == values["val_psnr_mri"]  # the trained task's
    assert all(np.isfinite(values[f"demo_val_{m}_{t}"]) for m in ("psnr", "ssim") for t in ("ct", "pet"))

    events = EventAccumulator(str(run)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val_psnr", "val_psnr_mri", "demo_val_psnr_ct", "demo_val_ssim_pet"} <= tags
    assert events.Scalars("demo_val_psnr_ct")[0].value == pytest.approx(values["demo_val_psnr_ct"])


def test_the_mix_share_is_recorded(finetuned):
    run, log = finetuned
    assert "Tasks the training data lacks, ct, pet:" in log and "train items of the demo set" in log
    assert json.loads((run / "run.json").read_text())["settings"]["mix_demo"] == 0.5
    config = json.loads((run / "config.json").read_text())
    assert config["mix_demo"] == 0.5 and config["val_other_tasks"] == "demo"


def parsed(root, run_name, **overrides):
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({
        "bundle_root": str(BUNDLE), "runs_dir": str(root / "runs"), "run_name": run_name, "dataset": "folder",
        "dataset_dir": str(root / "site"), "tasks": ["mri"], "num_workers": 0, "vary_degradations": False,
        "batch_size": 4, "patch_size": [32, 32], "network_def": TINY_NETWORK,
        **overrides,
    })  # fmt: skip
    return parser


def test_the_training_batches_hold_the_share_of_other_tasks_and_the_off_switches_work(site):
    root, _ = site
    mixed = parsed(root, "mixed", mix_demo=0.5)
    batches = [batch["task"] for batch, _ in zip(mixed.get_parsed_content("train#dataloader"), range(3), strict=False)]
    assert all(Counter(tasks)["mri"] == 2 and set(tasks) - {"mri"} <= {"ct", "pet"} for tasks in batches)
    assert {t for tasks in batches for t in tasks} > {"mri"}

    plain = parsed(root, "plain", val_other_tasks="off")
    assert {item["task"] for item in plain.get_parsed_content("train#dataset").data} == {"mri"}  # mix_demo 0
    assert {item["task"] for item in plain.get_parsed_content("validate#dataset").data} == {"mri"}
    assert plain.get_parsed_content("validate#sources") == {"mri": None}


def test_a_bad_share_is_one_line_and_writes_nothing(site):
    root, network = site  # the values refused are those of test_data_other_tasks; here through the command line
    (result,) = run_side_by_side([train_command(root, network, "bad", "--mix_demo", "-0.5")])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(errors) == 1
    assert errors[0].startswith("error: --mix_demo -0.5: the share of each batch") and "[0, 1)" in errors[0]
    assert not (root / "runs" / "bad").exists()
