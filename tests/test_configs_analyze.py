"""configs/analyze.json: parses from any working directory, runs through the CLI, refuses a user's folder."""

import csv
import os
import subprocess

import numpy as np
import torch
from _workflow_data import BUNDLE, TINY_NETWORK, bundle_command, demo_dir, tiny_network_config
from monai.bundle import ConfigParser
from PIL import Image
from scripts.networks import AMIR, Restormer
from scripts.ownership import mark_folder

CONFIG = BUNDLE / "configs" / "analyze.json"
# one thread per process: the test machine's two cores are shared, and spinning OpenMP threads slow a tiny net 10x
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY_RESTORMER = {"_target_": "scripts.networks.Restormer", "dim": 8, "num_blocks": [1, 1, 1, 1],
                  "num_refinement_blocks": 1}  # fmt: skip


def test_config_parses_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update({"bundle_root": str(BUNDLE), "interference#step_size": 1e-4})
    assert parser.get_parsed_content("ckpt_path") == f"{BUNDLE}/models/model.pt"
    assert parser.get_parsed_content("output_dir").startswith(f"{BUNDLE}/runs/analyze-")
    runs = tmp_path / "runs"
    (runs / "mine" / "models").mkdir(parents=True)
    mark_folder(runs / "mine", "run")
    torch.save({}, runs / "mine" / "models" / "model.pt")
    parser.update({"runs_dir": str(runs), "run_name": "mine"})  # a training run's weights, a new analysis folder
    assert parser.get_parsed_content("ckpt_path", lazy=False) == str(runs / "mine" / "models" / "model.pt")
    assert parser.get_parsed_content("output_dir", lazy=False).startswith(f"{runs}/analyze-")
    assert parser.get_parsed_content("interference")["step_size"] == 1e-4
    assert parser.get_parsed_content("tasks") == ["mri", "ct", "pet"] and parser["dataset_dir"] is None
    shipped = torch.load(BUNDLE / "models" / "baselines" / "restormer_demo.pt", map_location="cpu", weights_only=True)
    parser.get_parsed_content("restormer_def").load_state_dict(shipped)  # the Restormer checkpoint fits its def
    assert parser["run"][0] == {"_target_": "scripts.errors.install_cli_excepthook"}
    assert parser["analysis#_target_"] == "scripts.analysis.RoutingAnalysis"


def test_cli_writes_the_report_for_a_task_subset(tmp_path):
    weights, restormer, out = tmp_path / "amir.pt", tmp_path / "restormer.pt", tmp_path / "analysis"
    kwargs = {k: v for k, v in TINY_NETWORK.items() if k != "_target_"}
    torch.manual_seed(0)
    torch.save(AMIR(**kwargs).state_dict(), weights)
    torch.save(Restormer(**kwargs).state_dict(), restormer)
    options = [
        "--dataset_dir", str(demo_dir()), "--network_def", tiny_network_config(tmp_path / "tiny.json"),
        "--ckpt_path", str(weights), "--restormer_ckpt_path", str(restormer),
        "--restormer_def", str(TINY_RESTORMER), "--output_dir", str(out), "--tasks", "['mri','ct']",
        "--max_per_task", "3", "--interference#batch_size", "1", "--interference#num_batches", "1",
        "--interference#eval_slices", "1",
    ]  # fmt: skip
    result = subprocess.run(
        bundle_command("--config_file", "configs/analyze.json", *options),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "routing: 100%" in result.stderr and "interference Restormer" in result.stderr  # progress bars
    with np.load(out / "instructions.npz", allow_pickle=False) as npz:
        assert sorted(npz["task"]) == ["ct"] * 3 + ["mri"] * 3 and npz["instruction"].shape == (6, 256)
    with open(out / "interference.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["step_task"], r["loss_task"]) for r in rows][:2] == [
        ("AMIR", "mri", "mri"),
        ("AMIR", "mri", "ct"),
    ]
    assert len(rows) == 8
    text = (out / "report.md").read_text()
    assert "Slices analysed: 6 (mri 3, ct 3)" in text and "### Restormer" in text
    for level in (1, 2, 3):
        assert (out / f"expert_use_srm_level{level}.png").is_file()


def test_cli_refuses_a_folder_it_did_not_create(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    result = subprocess.run(
        bundle_command("--config_file", "configs/analyze.json", "--output_dir", str(user), "--dataset_dir",
                       str(demo_dir())),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {user} is a folder the bundle did not create")
    assert "Traceback" not in result.stderr
    assert [p.name for p in user.iterdir()] == ["notes.txt"]


def test_model_card_shows_the_demo_analysis_figures():
    assert "(routing_analysis.md)" in (BUNDLE / "docs" / "README.md").read_text()  # the card links its part
    section = (BUNDLE / "docs" / "routing_analysis.md").read_text()
    for name in ("analysis_expert_use.png", "analysis_instruction_embedding.png", "analysis_interference.png"):
        assert f"(images/{name})" in section, name
        with Image.open(BUNDLE / "docs" / "images" / name) as image:
            assert image.format == "PNG" and image.width > 200
