"""configs/evaluate.json through the CLI: per-slice CSV, the Table 1-shaped summary and the figures."""

import csv
import subprocess

from _workflow_data import (
    BUNDLE,
    ONE_THREAD_ENV,
    bundle_command,
    demo_dir,
    identity_weights,
    run_side_by_side,
    tiny_network_config,
)
from PIL import Image
from scripts.ownership import mark_folder
from scripts.weights import file_sha256


def test_evaluation_writes_table_csv_and_figures(tmp_path):
    weights, out = tmp_path / "identity.pt", tmp_path / "eval"
    identity_weights(weights)  # restored == LQ input: the network's rows must equal the LQ rows
    options = [
        "--dataset_dir", str(demo_dir()), "--network_def", tiny_network_config(tmp_path / "tiny.json"),
        "--ckpt_path", str(weights), "--output_dir", str(out), "--num_workers", "0", "--num_figures", "1",
        "--model_name", "Identity AMIR",
    ]  # fmt: skip
    result = subprocess.run(
        bundle_command("--config_file", "configs/evaluate.json", *options),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lines = (out / "metrics.md").read_text().splitlines()[2:]  # under the header naming the weights
    assert lines[0].startswith("| method | MRI SR PSNR | MRI SR SSIM | MRI SR RMSE | CT denoising PSNR")
    assert "PET synthesis RMSE | Average PSNR | Average SSIM |" in lines[0]
    lq_row, classical_row, model_row = (line.split(" | ") for line in lines[2:5])
    assert (
        lq_row[0] == "| LQ input" and classical_row[0] == "| Classical baseline" and model_row[0] == "| Identity AMIR"
    )
    assert lq_row[1:] == model_row[1:]
    assert float(lq_row[4]) > 20  # CT PSNR of quarter-dose noise in the soft-tissue window, dB
    assert float(classical_row[7]) > float(lq_row[7])  # the tuned PET denoiser beats the LQ input

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"LQ input", "Classical baseline", "Identity AMIR"}
    assert {r["task"] for r in rows} == {"mri", "ct", "pet"}
    assert len({r["id"] for r in rows}) == len(rows) // 3

    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["Identity_AMIR_ct_0.png", "Identity_AMIR_mri_0.png", "Identity_AMIR_pet_0.png"]
    width, height = Image.open(out / "figures" / figures[0]).size
    assert width == 4 * (height - 14) + 3 * 2  # four square CT panels side by side, under a caption strip


def test_run_name_evaluates_that_runs_model_into_a_new_folder(tmp_path):
    """``--run_name X`` without ``--ckpt_path``: run X's ``models/model.pt``, never the shipped weights, and the
    table goes to a new ``evaluate-`` folder, not into the training run's."""
    runs = tmp_path / "runs"
    (runs / "amir" / "models").mkdir(parents=True)
    mark_folder(runs / "amir", "run")  # as a training run's folder
    weights = runs / "amir" / "models" / "model.pt"
    identity_weights(weights)
    (runs / "notes").mkdir()
    before = sorted(p.name for p in (runs / "amir").rglob("*"))
    options = [
        "--dataset_dir", str(demo_dir()), "--network_def", tiny_network_config(tmp_path / "tiny.json"),
        "--runs_dir", str(runs), "--num_workers", "0", "--num_figures", "0", "--num_baseline_slices", "2",
    ]  # fmt: skip
    result = subprocess.run(
        bundle_command("--config_file", "configs/evaluate.json", *options, "--run_name", "amir"),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (runs / "amir").rglob("*")) == before  # nothing written into the run
    (evaluation,) = [p for p in runs.iterdir() if p.name.startswith("evaluate-")]
    lines = (evaluation / "metrics.md").read_text().splitlines()
    assert lines[0].strip() == f"Weights of AMIR: `{weights}`, sha256 `{file_sha256(weights)}`"
    rows = {line.split(" | ")[0]: line.split(" | ")[1:] for line in lines[4:]}
    assert rows["| AMIR"] == rows["| LQ input"]  # the identity weights of the run, not the shipped demo weights

    refusals = (("notes", "is not a training run of this bundle"), ("none", "is not a training run"))
    evaluate = bundle_command("--config_file", "configs/evaluate.json", *options)
    *refused, result = run_side_by_side(
        [*([*evaluate, "--run_name", name] for name, _ in refusals), [*evaluate, "--output_dir", str(runs / "amir")]]
    )
    for (name, words), refusal in zip(refusals, refused, strict=True):
        assert refusal.returncode == 1 and "Traceback" not in refusal.stderr
        assert refusal.stderr.strip().splitlines()[-1].startswith(f"error: {runs / name}: --run_name {name} {words}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {runs / 'amir'} is a training run's folder")
    assert sorted(p.name for p in (runs / "amir").rglob("*")) == before
    assert [p.name for p in runs.iterdir() if p.name.startswith("evaluate-")] == [evaluation.name]
