"""configs/evaluate.json through the CLI: per-slice CSV, the Table 1-shaped summary and the figures."""

import csv
import subprocess

from _workflow_data import BUNDLE, bundle_command, demo_dir, identity_weights, tiny_network_config
from PIL import Image


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
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lines = (out / "metrics.md").read_text().splitlines()
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
