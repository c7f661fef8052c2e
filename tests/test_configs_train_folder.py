"""train.json, evaluate.json and analyze.json on a folder data set, fine-tuning the shipped demo weights (one tiny
run shared)."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
import torch
from _workflow_data import BUNDLE, bundle_command, write_dicom_series, write_nifti
from monai.transforms import Compose
from scripts.data.folder import SPLIT_NAME
from scripts.weights import file_sha256
from scripts.workflows.finetune import part_parameters

SHIPPED = BUNDLE / "models" / "model.pt"
ENV_OPTIONS = ["--batch_size", "2", "--patch_size", "[32,32]", "--val_interval", "2", "--num_val_slices", "1"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(bundle_command(*args), cwd=BUNDLE, capture_output=True, text=True, timeout=300)


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """MRI: 3 high-quality NIfTI volumes (LQ simulated); CT: 3 paired DICOM series (lq/ and hq/)."""
    root = tmp_path_factory.mktemp("site")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_nifti(root / "mri" / f"subject{i}.nii.gz", rng.uniform(0, 500, (32, 32, 3)), np.eye(4))
        hq = rng.uniform(-200, 300, (32, 32, 2))
        write_dicom_series(root / "ct" / "hq" / f"patient{i}", (hq + 1024).astype(np.int16))
        write_dicom_series(
            root / "ct" / "lq" / f"patient{i}", (hq + 1024 + rng.normal(0, 20, hq.shape)).astype(np.int16)
        )
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def train(site, runs, *args, tasks="['mri','ct']"):
    return run_cli(
        "training", "--config_file", "configs/train.json", "--dataset", "folder", "--dataset_dir", str(site),
        "--tasks", tasks, "--runs_dir", str(runs), "--num_workers", "0", "--vary_degradations", "False",
        *ENV_OPTIONS, *args,
    )  # fmt: skip


@pytest.fixture(scope="module")
def finetuned(site, runs):
    """Two iterations fine-tuning the shipped demo weights, encoder frozen; then the input folder as before."""
    before = snapshot(site)
    options = ["--run_name", "site", "--init_ckpt", "models/model.pt", "--freeze", "['encoder']"]
    result = train(site, runs, *options, "--num_iterations", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert snapshot(site) == before  # nothing written beside the user's images
    assert "Fine-tuning from models/model.pt" in result.stdout + result.stderr
    return runs / "site", options


def test_fine_tuning_the_shipped_weights_on_a_folder_records_the_parent_and_keeps_frozen_parts(finetuned):
    run, _ = finetuned
    record = json.loads((run / "run.json").read_text())
    assert record["parent"] == {"path": str(SHIPPED), "sha256": file_sha256(SHIPPED)}
    assert record["settings"]["freeze"] == ["encoder"] and record["settings"]["dataset"] == "folder"
    split = json.loads((run / SPLIT_NAME).read_text())["tasks"]
    assert [len(split["mri"][s]) for s in ("train", "val", "test")] == [1, 1, 1] and split["ct"]["paired"]
    shipped = torch.load(SHIPPED, weights_only=True)
    trained = torch.load(run / "models" / "checkpoint_last.pt", weights_only=True)["model"]
    from scripts.networks import demo_amir

    encoder, decoder = (set(part_parameters(demo_amir(), part)) for part in ("encoder", "decoder"))
    assert all(torch.equal(trained[k], shipped[k]) for k in encoder)  # loaded, then frozen
    assert any(not torch.equal(trained[k], shipped[k]) for k in decoder)  # trained


def test_the_fine_tuning_resumes_with_its_settings_only(finetuned, site, runs):
    run, options = finetuned
    refused = train(site, runs, *options[:4], "--resume", "true", "--num_iterations", "4")  # without --freeze
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert refused.returncode == 1 and len(errors) == 1 and "fine-tuning: freeze ['encoder'] (now None)" in errors[0]
    resumed = train(site, runs, *options, "--resume", "true", "--num_iterations", "4")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    checkpoint = torch.load(run / "models" / "checkpoint_last.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 4 and "Fine-tuning from" not in resumed.stdout + resumed.stderr
    shipped, key = torch.load(SHIPPED, weights_only=True), "patch_embed.weight"  # of the frozen encoder
    assert torch.equal(checkpoint["model"][key], shipped[key])


def test_evaluate_on_the_folder_test_split(finetuned, site, tmp_path):
    run, _ = finetuned
    out = tmp_path / "eval"
    result = run_cli(
        "--config_file", "configs/evaluate.json", "--dataset", "folder", "--dataset_dir", str(site),
        "--tasks", "['mri','ct']", "--ckpt_path", str(run / "models" / "model.pt"), "--output_dir", str(out),
        "--num_workers", "0", "--num_figures", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (out / "metrics.md").read_text()
    assert "| MRI SR PSNR |" in table and "| CT denoising PSNR |" in table and "| AMIR |" in table
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["task"] for r in rows} == {"mri", "ct"}
    assert len({r["id"] for r in rows}) == 3 + 2  # the test split: one MRI volume of 3 slices, one CT series of 2
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["AMIR_ct_0.png", "AMIR_mri_0.png"]


def test_analysis_of_the_fine_tuned_weights_on_the_folder(finetuned, site, tmp_path):
    run, _ = finetuned
    out, before = tmp_path / "analysis", snapshot(site)
    result = run_cli(
        "--config_file", "configs/analyze.json", "--dataset", "folder", "--dataset_dir", str(site),
        "--tasks", "['mri','ct']", "--split", "test", "--ckpt_path", str(run / "models" / "model.pt"),
        "--output_dir", str(out), "--max_per_task", "2", "--interference#batch_size", "1",
        "--interference#num_batches", "1", "--interference#eval_slices", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with np.load(out / "instructions.npz", allow_pickle=False) as npz:
        assert sorted(npz["task"]) == ["ct", "ct", "mri", "mri"] and npz["instruction"].shape == (4, 256)
    assert "Slices analysed: 4 (mri 2, ct 2)" in (out / "report.md").read_text()
    assert snapshot(site) == before


@pytest.mark.parametrize("task, bad, split", [("mri", 1, "all"), ("ct", 0, "test")])
def test_evaluating_non_finite_values_is_refused_before_any_output(tmp_path, task, bad, split):
    """In the evaluated slices, or (CT, volume 0: the validation split) in those the classical baseline tunes on."""
    data, out = tmp_path / "data", tmp_path / "eval"
    rng = np.random.default_rng(0)
    for i in range(3):
        volume = rng.uniform(0, 500, (32, 32, 3))
        volume[3, 3, 1] = np.nan if i == bad else volume[3, 3, 1]
        write_nifti(data / task / f"s{i}.nii.gz", volume, np.eye(4))
    result = run_cli(
        "--config_file", "configs/evaluate.json", "--dataset", "folder", "--dataset_dir", str(data),
        "--tasks", f"['{task}']", "--split", split, "--output_dir", str(out), "--num_workers", "0",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-2:] == [
        "error: evaluation data: 1 problem(s); fix or remove these files (nothing was evaluated):",
        f"  {data / task / f's{bad}.nii.gz'}: 1 non-finite values (NaN or inf)",
    ]
    assert not out.exists()


def test_a_bad_folder_is_one_line_and_writes_nothing_there(site, runs, tmp_path):
    bad = tmp_path / "bad"
    write_nifti(bad / "ct" / "hq" / "a.nii.gz", np.zeros((20, 20, 2)), np.eye(4))
    write_nifti(bad / "ct" / "hq" / "b.nii.gz", np.zeros((20, 20, 2)), np.eye(4))
    write_nifti(bad / "ct" / "lq" / "a.nii.gz", np.zeros((20, 20, 2)), np.eye(4))
    before = snapshot(bad)
    result = train(bad, runs, "--run_name", "bad", "--num_iterations", "2", tasks="['ct']")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(errors) == 1
    assert errors[0].startswith(f"error: {bad / 'ct' / 'hq' / 'b.nii.gz'}: no file b.nii.gz in")
    assert snapshot(bad) == before and not (runs / "bad").exists()  # no run folder left behind either


def test_levels_vary_by_default_on_a_high_quality_only_folder_and_never_replace_a_real_lq(site):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"dataset": "folder", "dataset_dir": str(site / "mri"), "tasks": ["mri"]})
    assert parser.get_parsed_content("vary_degradations") and parser.get_parsed_content("dose_range") == [0.15, 0.4]
    parser.update({"dataset_dir": str(site), "tasks": ["mri", "ct"]})  # paired CT: a drawn dose would replace its LQ
    assert not parser.get_parsed_content("vary_degradations", lazy=False)
    # asked for anyway (a folder of real pairs and simulated volumes): the real low-dose CT keeps its own LQ
    items = [i for i in parser.get_parsed_content("train#datalist", lazy=False) if i["task"] == "ct"]
    assert items and all(i["lq_acquired"] for i in items)
    loaded = Compose(parser.get_parsed_content("train#deterministic_transforms"))(items[0])
    parser.update({"vary_degradations": True, "flip_prob": 0.0, "ct_pixel_factors": None})
    parser.update({"patch_size": list(loaded["image"].shape[1:])})  # the whole slice, so the two can be compared
    item = Compose(parser.get_parsed_content("train#preprocessing", lazy=False))(items[0])
    assert parser.get_parsed_content("dose_range") == [0.15, 0.4]
    assert torch.equal(item["image"], loaded["image"]) and "lq_acquired" not in item
