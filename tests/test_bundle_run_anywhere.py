"""Every config runs from any working directory without PYTHONPATH: it puts ``bundle_root`` on ``sys.path`` itself,
as the model zoo, MONAI Label and other tools that load the bundle from elsewhere expect."""

import os
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from _workflow_data import BUNDLE
from monai.bundle import ConfigParser

CONFIGS = BUNDLE / "configs"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _run(config: str, *args: str, cwd, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", str(BUNDLE)]
    return subprocess.run([*command, *args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_inference_restores_from_another_folder(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = np.random.default_rng(0).uniform(-1000, 500, (24, 24, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([0.8, 0.8, 2.0, 1.0])), inputs / "ct.nii.gz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _run(str(CONFIGS / "inference.json"), "--dataset_dir", str(inputs), "--output_dir", str(out),
                  "--modality", "ct", cwd=elsewhere)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    restored = nib.load(out / "ct_restored.nii.gz")
    assert restored.shape == image.shape and np.isfinite(restored.get_fdata()).all()
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing lands in the working directory


@pytest.mark.parametrize(
    "names",
    [["train.json"], ["evaluate.json"], ["analyze.json"], ["inference.json"], ["train.json", "multi_gpu_train.json"]],
)
def test_every_config_parses_and_runs_its_first_step_from_another_folder(names, tmp_path):
    """Parsed (every id resolvable without instantiating) and run up to the option check, which imports scripts."""
    files = [str(CONFIGS / name) for name in names]
    parser = ConfigParser()
    parser.read_config(files)
    parser["bundle_root"] = str(BUNDLE)
    parser.parse()
    assert parser["initialize"][0].startswith("$None if os.path.abspath(@bundle_root) in sys.path")
    assert parser["run"][1] == {"_target_": "scripts.cli.refuse_unknown_options"}

    config_arg = files[0] if len(files) == 1 else str(files)
    env = _env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    result = _run(config_arg, "--runs_dir", str(tmp_path / "runs"), "--dataset_dirr", "x", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "ModuleNotFoundError" not in result.stderr and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown option --dataset_dirr: ") and last.endswith("did you mean --dataset_dir?")
    assert not (tmp_path / "runs").exists()
