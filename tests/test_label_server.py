"""MONAI Label 0.8.5 serving and training the bundle: a real server, started as deploy/README.md tells a user.

The module runs the README's commands (:data:`COMMANDS`; a test checks that the README holds them verbatim) in
``.venv-label`` (``bash run.sh test`` makes it from deploy/requirements-label.txt): the ``monaibundle`` sample app
from ``monailabel apps --download``, this bundle copied into its ``model/amir`` folder with the shipped weights,
and ``monailabel start_server`` on 127.0.0.1 (a free port), without the model zoo or SAM2. Through Label's REST API:
``/info/`` lists the model; ``/infer`` restores an MRI, a CT and a PET volume, the modality chosen per request,
into the input's shape and affine, float32, equal to ``python -m monai.bundle run --config_file
configs/inference.json``; every ``model_filename`` Label offers loads; a request without a modality fails with the
bundle's one line; a short ``/train`` run (2 Label epochs of 2 iterations) counts its progress to its real end
and publishes its best weights to ``models/model.pt``, which the next ``/infer`` uses. The only change to the copied
bundle is the training's size (``val_interval``, batch and patch size), as the README says a user may set it.
The bundle's command line also writes the same DICOM series under .venv-label's pydicom 2 as under .venv's pydicom 3.
The server runs in its own process group, killed at the end whatever happens; every request has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from _workflow_data import write_dicom_series
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
#: MONAI Label's environment (run.sh sets it up beside .venv); another one can be named by AMIR_LABEL_VENV.
LABEL_VENV = Path(os.environ.get("AMIR_LABEL_VENV", REPO / ".venv-label"))
PORT = "8000"  # the README's port; the test serves on a free one
#: deploy/README.md's commands, run from a folder holding the bundle (``bundle/``), with .venv-label activated.
COMMANDS = {
    "app": "monailabel apps --download --name monaibundle --output label",
    "folder": "mkdir -p label/monaibundle/model/amir",
    "copy": "cp -r bundle/configs bundle/scripts bundle/models label/monaibundle/model/amir/",
    "serve": "monailabel start_server --app label/monaibundle --studies label/studies --conf models amir "
    "--conf zoo_source github --conf sam2 false --host 127.0.0.1 --port 8000",
    "info": "curl -s -m 60 http://127.0.0.1:8000/info/",
    "infer": "curl -s -m 600 -o ct_restored.nii.gz -w '%{http_code}' -X POST "
    "'http://127.0.0.1:8000/infer/amir?output=image' -F 'params={\"modality\": \"ct\"}' -F file=@ct.nii.gz",
    "train": "curl -s -m 60 -X POST http://127.0.0.1:8000/train/amir -H 'Content-Type: application/json' "
    '-d \'{"modality": "ct", "max_epochs": 2, "val_split": 0.5}\'',
    "status": "curl -s -m 60 http://127.0.0.1:8000/train/",
    "cli": "python -m monai.bundle run --config_file configs/inference.json --dataset_dir ct --output_dir out_ct "
    "--modality ct",
}
#: The training's size in the copied train.json (one Label epoch is ``val_interval`` iterations).
SMALL_TRAINING = {"val_interval": 2, "batch_size": 2, "patch_size": [32, 32], "num_workers": 0, "num_val_slices": 2}
MODALITIES = ("mri", "ct", "pet")


def label_env() -> dict[str, str]:
    """The environment of an activated .venv-label, one thread per process (the test machine's cores are shared)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{LABEL_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(LABEL_VENV))
    env.update(OMP_NUM_THREADS="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


def command(name: str, port: str = PORT, modality: str = "ct", params: dict | None = None) -> list[str]:
    """A README command for ``port``, ``modality`` (its files and option) and the request's ``params``."""
    text = COMMANDS[name].replace(f":{PORT}/", f":{port}/").replace(f"--port {PORT}", f"--port {port}")
    for old, new in (("ct_restored", f"{modality}_restored"), ("@ct.", f"@{modality}."), ("_ct ", f"_{modality} ")):
        text = text.replace(old, new)
    text = re.sub(r"(--dataset_dir|--modality) ct\b", rf"\1 {modality}", text)
    if params is not None:
        text = text.replace(json.dumps({"modality": "ct"}), json.dumps(params))
    return shlex.split(text)


def run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a command in .venv-label's environment; fail with its output if it fails."""
    done = subprocess.run(args, cwd=cwd, env=label_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{shlex.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def free_port() -> str:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def volume(modality: str, seed: int) -> np.ndarray:
    """A 3 x 40 x 36 volume (slice axis first) in the modality's units, with values beyond its window."""
    rng = np.random.default_rng(seed)
    if modality == "ct":
        data = rng.normal(0.0, 300.0, (3, 40, 36))
        data[0, :4, :4] = -3000.0
    elif modality == "mri":
        data = rng.uniform(0.0, 1500.0, (3, 40, 36))
    else:
        data = rng.gamma(2.0, 1.5, (3, 40, 36))
    return data.astype(np.float32)


#: 3 mm slices along the first array axis, oblique-free LPS-like axes.
AFFINE = np.array([[0, 0, -0.7, 20], [0, -0.7, 0, 10], [3.0, 0, 0, -5], [0, 0, 0, 1]])


def write_studies(studies: Path) -> None:
    """Label's datastore: two low-dose CT volumes (images) and their full-dose volumes (final labels)."""
    (studies / "labels" / "final").mkdir(parents=True)
    rng = np.random.default_rng(0)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    for i in range(2):
        hq = (rng.normal(0.0, 50.0, (48, 40, 3)) + np.linspace(-500, 500, 40)[None, :, None]).astype(np.float32)
        lq = hq + rng.normal(0.0, 30.0, hq.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(lq, affine), str(studies / f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(hq, affine), str(studies / "labels" / "final" / f"case{i}.nii.gz"))


class Server:
    """``monailabel start_server`` in its own process group, its output in a log file."""

    def __init__(self, work: Path, port: str) -> None:
        self.work, self.port, self.log = work, port, work / "server.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command("serve", port), cwd=work, env=label_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def text(self) -> str:
        """The server's log so far."""
        return self.log.read_text(errors="replace")

    def curl(self, name: str, modality: str = "ct", params: dict | None = None, timeout: float = 620) -> str:
        """A README ``curl`` command against this server; returns what it printed."""
        return run(command(name, self.port, modality, params), self.work, timeout).stdout

    def wait_ready(self, timeout: float = 300) -> dict:
        """``/info/`` once the server answers (fail if it exits first)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.process.poll() is None, f"the server exited:\n{self.text()[-4000:]}"
            done = subprocess.run(
                command("info", self.port), env=label_env(), capture_output=True, text=True, timeout=70
            )
            if done.returncode == 0 and done.stdout.startswith("{"):
                return json.loads(done.stdout)
            time.sleep(2)
        raise AssertionError(f"the server did not answer within {timeout} s:\n{self.text()[-4000:]}")

    def stop(self) -> None:
        """Kill the server's process group (it holds the training processes too)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


def dicom_runs(work: Path) -> dict[str, subprocess.Popen]:
    """``monai.bundle run`` of a DICOM CT series (DICOM out) in .venv-label and in this environment, started."""
    stored = np.random.default_rng(3).normal(1024.0, 200.0, (40, 36, 3)).clip(0, 4000)
    write_dicom_series(work / "dicom" / "series", stored.astype(np.int16))
    pythons = {"label": str(LABEL_VENV / "bin" / "python"), "main": sys.executable}
    return {
        name: subprocess.Popen(
            [
                python,
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                "configs/inference.json",
                "--dataset_dir",
                str(work / "dicom"),
                "--output_dir",
                str(work / f"dicom_{name}"),
            ],
            cwd=BUNDLE,
            env={**label_env(), "PATH": os.environ.get("PATH", "")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for name, python in pythons.items()
    }


@pytest.fixture(scope="module")
def label(tmp_path_factory):
    """The README's app and server, the inputs of each modality and their ``monai.bundle run`` results."""
    if not (LABEL_VENV / "bin" / "monailabel").is_file():
        pytest.fail(f"{LABEL_VENV} has no monailabel: `bash run.sh test` sets up MONAI Label's environment there.")
    work = tmp_path_factory.mktemp("label")
    (work / "bundle").symlink_to(BUNDLE)  # the README's commands copy from bundle/
    for name in ("app", "folder", "copy"):
        run(command(name), work, timeout=300)
    amir = work / "label" / "monaibundle" / "model" / "amir"
    train = json.loads((amir / "configs" / "train.json").read_text())
    (amir / "configs" / "train.json").write_text(json.dumps({**train, **SMALL_TRAINING}, indent=4))
    write_studies(work / "label" / "studies")
    server, runs = Server(work, free_port()), {}
    try:  # the command-line restorations run side by side while the server starts
        for seed, m in enumerate(MODALITIES):
            (amir / m).mkdir()
            for folder in (amir / m, work):
                nib.save(nib.Nifti1Image(volume(m, seed), AFFINE), str(folder / f"{m}.nii.gz"))
            runs[m] = subprocess.Popen(command("cli", modality=m), cwd=amir, env=label_env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)  # fmt: skip
        runs.update(dicom_runs(work))
        for name, process in runs.items():
            output = process.communicate(timeout=300)[0]
            assert process.returncode == 0, f"{name}: {output[-3000:]}"
        cli = {
            m: nib.load(str(amir / f"out_{m}" / f"{m}_restored.nii.gz")).get_fdata(dtype=np.float32) for m in MODALITIES
        }
        dicom = {n: sorted((work / f"dicom_{n}" / "series_restored").glob("*.dcm")) for n in ("label", "main")}
        info = server.wait_ready()
        yield {"work": work, "amir": amir, "server": server, "info": info, "cli": cli, "dicom": dicom}
    finally:
        server.stop()
        for process in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=20)


def test_readme_gives_the_commands_the_test_runs():
    readme = (REPO / "deploy" / "README.md").read_text()
    section = readme.split("## Serving with MONAI Label", 1)[1].split("\n## ", 1)[0]
    missing = [c for c in COMMANDS.values() if c not in section.replace("\\\n    ", "")]
    assert not missing, missing
    assert "source .venv-label/bin/activate" in section and "deploy/requirements-label.txt" in section


def test_every_shipped_weights_file_fits_the_network():
    """MONAI Label offers every ``models/*.pt`` as a ``model_filename``: each must load into ``network_def``."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    offered = sorted(BUNDLE.glob("models/*.pt"))
    assert [p.name for p in offered] == ["model.pt"]
    for path in offered:
        parser.get_parsed_content("network_def").load_state_dict(torch.load(path, weights_only=True), strict=True)


def test_info_lists_the_model_with_its_modality_option(label):
    model = label["info"]["models"]["amir"]
    assert model["config"]["modality"] is None and model["config"]["model_filename"] == ["model.pt"]
    assert label["info"]["trainers"]["amir"]["config"]["modality"] is None


@pytest.mark.parametrize("modality", MODALITIES)
def test_infer_equals_the_bundle_run(label, modality):
    server, expected = label["server"], label["cli"][modality]
    for model_filename in label["info"]["models"]["amir"]["config"]["model_filename"]:
        out = label["work"] / f"{modality}_restored.nii.gz"
        out.unlink(missing_ok=True)
        code = server.curl("infer", modality, {"modality": modality, "model_filename": model_filename})
        assert code == "200", server.text()[-3000:]
        restored = nib.load(str(out))
        source = nib.load(str(label["work"] / f"{modality}.nii.gz"))
        assert restored.shape == source.shape and restored.get_data_dtype() == np.float32
        np.testing.assert_allclose(restored.affine, source.affine, atol=1e-5)
        np.testing.assert_array_equal(restored.get_fdata(dtype=np.float32), expected)


def test_infer_without_modality_says_what_to_set(label):
    server = label["server"]
    assert server.curl("infer", "ct", {}) == "500"
    line = "a NIfTI image does not say its modality; give it with --modality mri|ct|pet "
    line += '(MONAI Label: the request\'s "modality" option)'
    end = time.monotonic() + 60  # uvicorn logs the error after it has answered
    while line not in server.text() and time.monotonic() < end:
        time.sleep(0.5)
    assert line in server.text()


def test_train_publishes_its_best_weights_for_the_next_infer(label):
    server, amir, work = label["server"], label["amir"], label["work"]
    before = torch.load(amir / "models" / "model.pt", weights_only=True)
    out = work / "ct_restored.nii.gz"
    server.curl("train")
    end = time.monotonic() + 600
    while True:
        status = json.loads(server.curl("status"))
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.monotonic() < end, f"training did not end:\n{server.text()[-4000:]}"
        time.sleep(2)
    log = server.text()
    assert status["status"] == "DONE", log[-6000:]
    # 2 Label epochs of val_interval 2 iterations: the log and the progress bar count to 4, not to num_iterations
    assert "iteration 4/4 -- train_loss" in log and "| 4/4 [" in log and "/200000" not in log
    best = sorted(amir.glob("runs/*/models/model.pt"))
    assert len(best) == 1
    published = torch.load(amir / "models" / "model.pt", weights_only=True)
    trained = torch.load(best[0], weights_only=True)
    assert published.keys() == trained.keys() and all(torch.equal(published[k], trained[k]) for k in trained)
    assert any(not torch.equal(before[k], published[k]) for k in before)
    out.unlink(missing_ok=True)
    assert server.curl("infer", "ct") == "200"
    after = nib.load(str(out)).get_fdata(dtype=np.float32)
    assert not np.array_equal(after, label["cli"]["ct"])
    run([*command("cli", modality="ct"), "--overwrite", "true"], amir, timeout=300)  # the bundle, new weights
    np.testing.assert_array_equal(
        after, nib.load(str(amir / "out_ct" / "ct_restored.nii.gz")).get_fdata(dtype=np.float32)
    )


def test_cli_writes_the_same_dicom_series_in_both_environments(label):
    """The bundle's scripts run under MONAI Label's pydicom 2 / numpy 1 as under the bundle's pydicom 3 / numpy 2:
    the fixture restored a DICOM CT series to a DICOM series with ``monai.bundle run`` in each environment."""
    series = {name: [pydicom.dcmread(f) for f in files] for name, files in label["dicom"].items()}
    assert len(series["label"]) == len(series["main"]) == 3
    for a, b in zip(series["label"], series["main"], strict=True):
        assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
        assert sorted(a.dir()) == sorted(b.dir()) and a.SOPInstanceUID == a.file_meta.MediaStorageSOPInstanceUID
        values = [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in (a, b)]
        np.testing.assert_allclose(values[0], values[1], atol=float(a.RescaleSlope))
