"""configs/train.json and configs/multi_gpu_train.json through the CLI: a short run killed and resumed, and DDP."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from _workflow_data import BUNDLE, bundle_command, demo_dir, tiny_network_config


@pytest.fixture(scope="module")
def tiny_options(tmp_path_factory):
    network = tiny_network_config(tmp_path_factory.mktemp("net") / "tiny.json")
    return [
        "--dataset_dir", str(demo_dir()), "--network_def", network, "--batch_size", "2", "--patch_size", "[32,32]",
        "--val_interval", "2", "--num_val_slices", "1", "--num_workers", "0", "--log_interval", "1",
    ]  # fmt: skip


def last_iteration(output_dir):
    return torch.load(output_dir / "models" / "checkpoint_last.pt", weights_only=True)["trainer"]["iteration"]


def test_training_killed_then_resumed_ends_at_the_same_iteration(tmp_path, tiny_options):
    out = tmp_path / "train"
    options = [*tiny_options, "--output_dir", str(out), "--num_iterations", "10"]
    checkpoint = out / "models" / "checkpoint_last.pt"
    first = subprocess.Popen(
        bundle_command("training", "--config_file", "configs/train.json", *options),
        cwd=BUNDLE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the first run ended before it could be killed"
    killed_at = last_iteration(out)
    assert killed_at in (2, 4, 6, 8)

    resumed = subprocess.run(
        bundle_command("--config_file", "configs/train.json", *options, "--resume", "true"),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resumed from {checkpoint} at iteration {killed_at}" in resumed.stdout
    saved_at = [int(i) for i in re.findall(r"Saved checkpoint at iteration (\d+)", resumed.stdout)]
    assert saved_at == list(range(killed_at + 2, 11, 2))  # continues after the checkpoint, nothing repeated
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["trainer"]["iteration"] == 10
    assert saved["lr_scheduler"]["last_epoch"] == 10  # cosine schedule stepped once per iteration
    assert (out / "models" / "model.pt").is_file()
    assert list(out.glob("events.out.tfevents.*"))
    assert "val_psnr_mri" in resumed.stdout and "val_ssim_ct" in resumed.stdout


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_multi_gpu_config_runs_two_processes_with_gloo(tmp_path, tiny_options):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "training",
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        *tiny_options, "--output_dir", str(out), "--num_iterations", "4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert last_iteration(out) == 4
    assert result.stdout.count("Saved checkpoint at iteration 4") == 1  # rank 0 only
    assert (out / "models" / "model.pt").is_file()


def test_mlflow_tracking_hook_patches_both_engines(tmp_path, monkeypatch):
    # MONAI's --tracking mlflow appends MLFlowHandler to train#handlers and validate#handlers (mlflow not needed here)
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(BUNDLE)
    workflow = ConfigWorkflow(
        config_file="configs/train.json", tracking="mlflow", logging_file=False, output_dir=str(tmp_path)
    )
    for handlers in ("train#handlers", "validate#handlers"):
        assert workflow.parser[handlers][-1]["_target_"] == "MLFlowHandler"
    assert list(tmp_path.glob("config_*.json"))  # the executed config, saved for the run's artifacts
