"""configs/train.json and configs/multi_gpu_train.json through the CLI: run folders, a run killed or stopped by a
full disk and resumed to the uninterrupted result, one writer per run folder, resume checks, extending a run, short
runs, bad data reported before training, and DDP."""

import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pytest
import torch
from _workflow_data import BUNDLE, bundle_command, dead_pid, demo_dir, tiny_network_config
from scripts.atomic import TEMP_TAG, temporary_name

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every run, so that results compare bitwise


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def tiny_options(tmp_path_factory, runs_dir):
    return options(tmp_path_factory.mktemp("net"), runs_dir)


def options(net_dir, runs_dir, **changes):
    """Command-line options of a tiny, fast run (``changes`` replace or add options)."""
    values = {
        "dataset_dir": str(demo_dir()),
        "network_def": tiny_network_config(net_dir / "tiny.json"),
        "batch_size": "2",
        "patch_size": "[32,32]",
        "val_interval": "2",
        "num_val_slices": "1",
        "num_workers": "0",
        "log_interval": "1",
        "runs_dir": str(runs_dir),
        # fixed degradations: drawing them builds noise banks, whose PET reconstructions cost about 45 CPU-s per
        # run of 10 iterations here; the killed run's resume covers them (VARY)
        "vary_degradations": "False",
        **changes,
    }
    return [text for key, value in values.items() for text in (f"--{key}", value)]


#: Options that draw the degradations per item, as the demo set trains by default, from PET noise banks of 2
#: realisations instead of 8 (each costs 2 OSEM reconstructions; the draws still combine them per call).
VARY = ["--vary_degradations", "True", "--train#random_transforms#2#bank_size", "2"]


def train(options, *args, **kwargs):
    command = bundle_command("training", "--config_file", "configs/train.json", *options, *args)
    return subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ENV, **kwargs)


def checkpoint(run):
    return torch.load(run / "models" / "checkpoint_last.pt", weights_only=True)


def saved_at(stdout):
    return [int(i) for i in re.findall(r"Saved checkpoint at iteration (\d+)", stdout)]


def assert_one_line_error(result, *expected):
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for text in expected:
        assert text in errors[0]
    return errors[0]


def start(command, **kwargs) -> tuple[subprocess.Popen, Future]:
    """Start a command in the background; a thread collects its output, so that its pipes never fill."""
    process = subprocess.Popen(
        command, cwd=BUNDLE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kwargs
    )
    pool = ThreadPoolExecutor(1)
    output = pool.submit(process.communicate)
    pool.shutdown(wait=False)  # the thread ends with the process
    return process, output


def finished(process: subprocess.Popen, output: Future) -> subprocess.CompletedProcess:
    stdout, stderr = output.result(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_until(condition, timeout: float = 240) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def uninterrupted_run(options, runs_dir, name, iterations=10):
    """A run of ``iterations`` in one go."""
    result = train(options, "--run_name", name, "--num_iterations", str(iterations))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert saved_at(result.stdout) == list(range(2, iterations + 1, 2))
    return runs_dir / name


@pytest.fixture(scope="module")
def reference_run(tiny_options, runs_dir):
    """A run of 10 iterations in one go, degradations fixed."""
    return uninterrupted_run(tiny_options, runs_dir, "reference")


@pytest.fixture(scope="module")
def varied_reference_run(tiny_options, runs_dir):
    """A run of 6 iterations in one go, degradations drawn per item."""
    return uninterrupted_run([*tiny_options, *VARY], runs_dir, "varied-reference", iterations=6)


def copy_run(reference_run, name):
    copy = reference_run.parent / name
    shutil.copytree(reference_run, copy)
    return copy


def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny_options, runs_dir, varied_reference_run):
    """With the degradations drawn per item, so that their draws after the resume are checked too."""
    reference_run = varied_reference_run
    run = runs_dir / "killed"
    options = [*tiny_options, *VARY, "--run_name", "killed", "--num_iterations", "6"]
    last = run / "models" / "checkpoint_last.pt"
    command = bundle_command("training", "--config_file", "configs/train.json", *options)
    first = subprocess.Popen(command, cwd=BUNDLE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the first run ended before it could be killed"
    killed_at = checkpoint(run)["trainer"]["iteration"]
    assert killed_at in (2, 4)
    stale = run / "models" / f"{temporary_name('model.pt', dead_pid())}k1ll3d00.pt"  # as a kill mid-write leaves it
    stale.write_bytes(b"partial")

    resumed = train(options, "--resume", "true")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resumed from {last} at iteration {killed_at}" in resumed.stdout
    assert saved_at(resumed.stdout) == list(range(killed_at + 2, 7, 2))  # continues after the checkpoint
    assert not stale.exists()
    # the same weights, optimizer state and best metric as the run that was never stopped, bit for bit
    done, reference = checkpoint(run), checkpoint(reference_run)
    for part in ("model", "optimizer", "best", "lr_scheduler"):
        assert same(done[part], reference[part]), part
    assert done["trainer"]["iteration"] == 6
    best, best_reference = (torch.load(r / "models" / "model.pt", weights_only=True) for r in (run, reference_run))
    assert all(torch.equal(best[k], best_reference[k]) for k in best_reference)
    for path in (last, run / "models" / "model.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    record = json.loads((run / "run.json").read_text())
    assert [start["resume"] for start in record["starts"]] == [False, True]
    assert list(run.glob("events.out.tfevents.*")) and "val_ssim_ct" in resumed.stdout


def same(a, b) -> bool:
    """Equal nested state dicts, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def test_a_full_disk_stops_training_in_one_line_and_the_resume_ends_as_the_uninterrupted_run(
    tiny_options, runs_dir, reference_run
):
    run = runs_dir / "disk-full"
    options = [*tiny_options, "--run_name", "disk-full", "--num_iterations", "10"]
    last = run / "models" / "checkpoint_last.pt"
    command = bundle_command("training", "--config_file", "configs/train.json", *options)
    # a write past the file size limit fails with EFBIG, as one on a full disk with ENOSPC (the signal is ignored)
    process, output = start(command, preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
    try:
        assert wait_until(lambda: last.exists() or process.poll() is not None)
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (1, 1))  # the disk is full from now on
    finally:
        full = finished(process, output)
    saved = checkpoint(run)["trainer"]["iteration"]
    assert saved in (2, 4, 6, 8), "the run ended before the disk was full"
    line = assert_one_line_error(full, "the disk is full (File too large): training stopped at iteration")
    assert line.startswith(f"error: {run}") and f"{last} (iteration {saved}), is intact" in line
    assert line.endswith("Free space there, then run the same command with --resume true.")
    assert not [p for p in run.rglob("*") if p.is_file() and (p.stat().st_size == 0 or TEMP_TAG in p.name)]
    entries = sorted((run / "cache").glob("*.pt"))
    for entry in entries:  # empty, as MONAI's copy across file systems left entries on a full disk
        entry.write_bytes(b"")

    resumed = train(options, "--resume", "true")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rebuilt = re.findall(r"(\S+\.pt): damaged cache entry, empty \(0 bytes\); it is built again", resumed.stdout)
    assert rebuilt and set(rebuilt) <= {str(entry) for entry in entries}
    done, reference = checkpoint(run), checkpoint(reference_run)
    for part in ("model", "optimizer", "best", "lr_scheduler"):
        assert same(done[part], reference[part]), part
    best, best_reference = (torch.load(r / "models" / "model.pt", weights_only=True) for r in (run, reference_run))
    assert all(torch.equal(best[k], best_reference[k]) for k in best_reference)


def test_two_trainings_racing_for_one_folder_one_trains_and_a_resume_is_refused(tiny_options, runs_dir):
    run = runs_dir / "raced"
    options = [*tiny_options, "--run_name", "raced", "--num_iterations", "1000"]
    command = bundle_command("training", "--config_file", "configs/train.json", *options)
    racers = [start(command) for _ in range(2)]
    try:
        assert wait_until(lambda: any(p.poll() is not None for p, _ in racers))
        ((loser, lost),) = [racer for racer in racers if racer[0].poll() is not None]
        (winner,) = [p for p, _ in racers if p is not loser]
        assert_one_line_error(finished(loser, lost), f"error: {run}: a training is running", f"process {winner.pid} ")
        last = run / "models" / "checkpoint_last.pt"
        assert wait_until(lambda: last.exists() or winner.poll() is not None) and winner.poll() is None
        resumed = train(options, "--resume", "true")
        assert_one_line_error(resumed, f"error: {run}: a training is running", f"process {winner.pid} ")
        assert winner.poll() is None  # still training
    finally:
        for process, _ in racers:
            process.kill()
            process.wait()
    # the folder is the winner's alone: one start recorded, its checkpoint whole
    assert [start["resume"] for start in json.loads((run / "run.json").read_text())["starts"]] == [False]
    assert checkpoint(run)["trainer"]["iteration"] % 2 == 0


def test_resume_without_its_checkpoint_is_refused_and_keeps_the_best_model(tiny_options, reference_run):
    run = copy_run(reference_run, "no-checkpoint")
    (run / "models" / "checkpoint_last.pt").unlink()
    best = (run / "models" / "model.pt").read_bytes()
    result = train(tiny_options, "--run_name", "no-checkpoint", "--num_iterations", "10", "--resume", "true")
    assert_one_line_error(result, f"error: {run / 'models' / 'checkpoint_last.pt'}: missing", "--overwrite true")
    assert (run / "models" / "model.pt").read_bytes() == best
    assert len(json.loads((run / "run.json").read_text())["starts"]) == 1


def test_resume_refuses_other_data_and_a_new_run_does_not_overwrite(tiny_options, reference_run):
    copy_run(reference_run, "other-data")
    result = train(tiny_options, "--run_name", "other-data", "--resume", "true", "--tasks", "['mri']")
    assert_one_line_error(
        result, "error: resume: run", "data: tasks ['mri', 'ct', 'pet'] (now ['mri'])", "--resume_force"
    )
    result = train(tiny_options, "--run_name", "other-data", "--num_iterations", "10")
    assert_one_line_error(result, "holds a training run already", "--overwrite true")
    assert checkpoint(reference_run.parent / "other-data")["trainer"]["iteration"] == 10  # untouched


def test_extending_a_run_keeps_the_new_interval_and_ends_at_the_minimum_rate(tiny_options, reference_run):
    run = copy_run(reference_run, "extended")
    options = [*tiny_options, "--run_name", "extended", "--resume", "true"]
    result = train(options, "--num_iterations", "10")
    assert_one_line_error(result, "has trained 10 iterations already", "--num_iterations larger than 10")
    result = train([*options, "--num_iterations", "15", "--val_interval", "3"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert saved_at(result.stdout) == [12, 15]  # validation every 3 iterations now, as asked
    state = checkpoint(run)
    assert state["trainer"]["iteration"] == 15 and state["trainer"]["epoch_length"] == 3
    assert state["lr_scheduler"]["T_max"] == 15 and state["lr_scheduler"]["last_epoch"] == 15
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-6, rel=1e-9)  # min_learning_rate
    assert json.loads((run / "run.json").read_text())["num_iterations"] == 15


def test_a_short_run_is_one_short_interval_logged_from_its_first_iteration(tmp_path, runs_dir):
    before = set(runs_dir.iterdir())
    short = options(tmp_path, runs_dir, num_iterations="3", val_interval="1000", log_interval="100")
    result = train(short)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert saved_at(result.stdout) == [3] and "val_psnr_mri" in result.stdout
    assert all(f"iteration {i}/3 -- train_loss" in result.stdout for i in (1, 2, 3))
    assert "Epoch [" not in result.stderr and "training: 100%" in result.stderr
    (new,) = set(runs_dir.iterdir()) - before  # its own, time-stamped folder
    assert new.name.startswith("train-") and (new / ".amir-bundle.json").is_file()
    assert (new / "models" / "model.pt").is_file() and (new / "config.json").is_file()


def test_bad_training_data_is_reported_at_once_before_training(tiny_options, runs_dir, tmp_path):
    data = tmp_path / "demo"
    shutil.copytree(demo_dir(), data)
    training = json.loads((data / "datalist.json").read_text())["training"]
    broken = data / training[0]["image"]
    broken.write_bytes(b"not a NIfTI file")
    nan = data / training[1]["label"]
    image = nib.load(nan)
    values = np.asarray(image.dataobj, dtype=np.float32)
    values[0, 0] = np.nan
    nib.save(nib.Nifti1Image(values, image.affine), nan)
    options = [*tiny_options, "--dataset_dir", str(data), "--run_name", "bad-data", "--num_iterations", "4"]
    result = train(options)
    line = assert_one_line_error(result, "error: training data: 2 problem(s)")
    problems = result.stderr.split(line, 1)[1].strip().splitlines()
    assert str(broken) in problems[0] + problems[1] and str(nan) in problems[0] + problems[1]
    assert not (runs_dir / "bad-data").exists()  # refused after the folder was made: removed again


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_multi_gpu_config_runs_two_processes_with_gloo(tiny_options, runs_dir):
    before = set(runs_dir.iterdir())
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "training",
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        *tiny_options, "--num_iterations", "5",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = set(runs_dir.iterdir()) - before  # one time-stamped folder: rank 0 told rank 1 its name
    assert checkpoint(run)["trainer"]["iteration"] == 5
    assert result.stdout.count("Saved checkpoint at iteration 5") == 1  # rank 0 only
    assert saved_at(result.stdout) == [2, 4, 5]
    assert (run / "models" / "model.pt").is_file()


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


@pytest.mark.parametrize(("dataset", "on"), [("demo", True), ("mayo", False), ("all-in-one", False)])
def test_dose_levels_and_flips_vary_on_the_demo_set_only(dataset, on):
    """The demo set draws the CT pixel size and dose, the PET DRF per item and flips; the paper's data sets keep its
    recipe. CT label noise is off by default and reaches the transform when set."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["dataset"] = dataset
    pixel, ct, pet, *_, rot = (parser.get_parsed_content(f"train#random_transforms#{i}") for i in range(8))
    assert pixel.factors == ((1.0, 1.5, 2.0, 3.0) if on else (1.0,))
    assert (ct.transform is not None, pet.transform is not None) == (on, on)
    if on:
        assert ct.transform.level_range == (0.15, 0.4) and pet.transform.level_range == (8.0, 20.0)
        assert ct.transform.simulator_kwargs["aec_reference_diameter_cm"] == 30.0
        assert ct.transform.label_noise_range is None  # off: see the model card
        parser["ct_label_noise"] = [0.0, 2.0]
        assert parser.get_parsed_content("train#random_transforms#1").transform.label_noise_range == (0.0, 2.0)
    assert rot.prob == (0.5 if on else 0.0)
