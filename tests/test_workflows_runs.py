"""Run folders: names, what a new run or a resume may do to a folder, the record and the resume checks."""

import json
import time
from pathlib import Path

import pytest
import torch
from _workflow_data import end_process, hold_run_lock
from monai.bundle import ConfigParser
from scripts.errors import UserInputError
from scripts.ownership import MARKER, folder_kind
from scripts.workflows import TrainingRun, executed_config, list_runs, run_dir

CONFIG = {
    "dataset": "all-in-one",
    "dataset_dir": "/data/amir",
    "tasks": ["mri", "ct"],
    "modality": None,
    "task_weights": None,
    "network_def": {"_target_": "scripts.networks.AMIR", "dim": 8},
    "learning_rate": 2e-4,
    "min_learning_rate": 1e-6,
    "batch_size": 8,
    "patch_size": [128, 128],
    "gamma": 0.001,
    "seed": 0,
    "num_workers": 4,
}


def make_run(path, resume=False, num_iterations=10, command=("train", "--x", "1"), **changes):
    options = {k: changes.pop(k) for k in ("resume_force", "overwrite") if k in changes}
    config = {**CONFIG, **changes}
    return TrainingRun(path, num_iterations, resume=resume, config=config, command_line=list(command), **options)


def save_checkpoint(run_path, iteration):
    (run_path / "models").mkdir(parents=True, exist_ok=True)
    torch.save({"trainer": {"iteration": iteration}}, run_path / "models" / "checkpoint_last.pt")


def test_run_dir_names(tmp_path, monkeypatch):
    assert run_dir(tmp_path, "exp1") == str(tmp_path / "exp1")
    for bad in ("a/b", "..", ".hidden", ""):
        with pytest.raises(UserInputError, match="plain folder name"):
            run_dir(tmp_path, bad)
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20250101-120000")
    (tmp_path / "new" / "train-20250101-120000").mkdir(parents=True)  # an earlier run in the same second
    name = run_dir(tmp_path / "new", None, "train")
    assert name == str(tmp_path / "new" / "train-20250101-120000-2")
    assert run_dir(tmp_path / "new", None, "train") == name  # one process, one run: MONAI may resolve it twice
    assert run_dir(tmp_path / "new", None, "evaluate") == str(tmp_path / "new" / "evaluate-20250101-120000")
    assert make_run(tmp_path / "exp1").prepare() == str(tmp_path / "exp1")
    with pytest.raises(UserInputError, match=r"--resume true needs .*--run_name NAME .*: exp1\)"):
        run_dir(tmp_path, None, "train", resume=True)
    assert list_runs(tmp_path) == ["exp1"]  # the time-stamped folder above carries no marker


def test_a_new_run_is_marked_and_recorded(tmp_path):
    path = tmp_path / "runs" / "a"
    make_run(path, command=["python", "-m", "monai.bundle", "run", "--dataset_dir", "/data/my amir"]).prepare()
    assert folder_kind(path) == "run"
    assert json.loads((path / "config.json").read_text())["dataset"] == "all-in-one"
    record = json.loads((path / "run.json").read_text())
    assert record["settings"]["network_def"] == CONFIG["network_def"]
    assert record["num_iterations"] == 10
    assert record["starts"][0]["command_line"] == "python -m monai.bundle run --dataset_dir '/data/my amir'"
    assert record["starts"][0]["resume"] is False


def test_a_new_run_never_replaces_an_earlier_one_unless_asked(tmp_path):
    path = tmp_path / "a"
    make_run(path).prepare()
    make_run(path).prepare()  # stopped before its first checkpoint: nothing to lose, the folder is reused
    save_checkpoint(path, 4)
    with pytest.raises(UserInputError, match=r"holds a training run already .*--resume true.*--overwrite true"):
        make_run(path).prepare()
    assert (path / "models" / "checkpoint_last.pt").is_file()
    make_run(path, overwrite=True).prepare()
    assert not (path / "models").exists() and folder_kind(path) == "run"
    assert len(json.loads((path / "run.json").read_text())["starts"]) == 1  # a new record


def test_a_folder_the_bundle_did_not_make_is_left_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (mine / "models").mkdir()
    for overwrite in (False, True):
        with pytest.raises(UserInputError, match=f"did not create .*{MARKER}.*another --run_name"):
            make_run(mine, overwrite=overwrite).prepare()
    assert sorted(p.name for p in mine.iterdir()) == ["models", "notes.txt"]
    # what MONAI's --tracking writes before the run starts does not make a folder the user's
    tracked = tmp_path / "tracked"
    tracked.mkdir()
    (tracked / "config_20250101_120000.json").write_text("{}")
    make_run(tracked).prepare()
    assert folder_kind(tracked) == "run"


def test_resume_needs_the_bundles_run(tmp_path):
    make_run(tmp_path / "a").prepare()
    with pytest.raises(UserInputError, match=r"there is no run at .*b \(runs in .*: a\)"):
        make_run(tmp_path / "b", resume=True).prepare()
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserInputError, match="not a training run of this bundle"):
        make_run(tmp_path / "plain", resume=True).prepare()


def test_resume_refuses_other_data_network_or_schedule_in_one_line(tmp_path):
    path = tmp_path / "a"
    make_run(path).prepare()
    save_checkpoint(path, 4)
    changes = {
        "dataset": "demo",
        "dataset_dir": None,
        "network_def": {"_target_": "scripts.networks.AMIR", "dim": 16},
        "learning_rate": 1e-3,
    }
    with pytest.raises(UserInputError) as raised:
        make_run(path, resume=True, **changes).prepare()
    message = str(raised.value)
    assert "\n" not in message and "--resume_force true" in message and str(path / "run.json") in message
    for expected in ("data: dataset 'all-in-one' (now 'demo')", "dataset_dir '/data/amir' (now None)", "network:"):
        assert expected in message
    assert "schedule: learning_rate 0.0002 (now 0.001)" in message
    # what does not change the result may differ; forced, the new settings become the run's
    same_network = {**CONFIG["network_def"], "gradient_checkpointing": True}
    make_run(path, resume=True, network_def=same_network, num_workers=0).prepare()
    make_run(path, resume=True, resume_force=True, **changes).prepare()
    record = json.loads((path / "run.json").read_text())
    assert record["settings"]["dataset"] == "demo" and [s["resume"] for s in record["starts"]] == [False, True, True]
    make_run(path, resume=True, **changes).prepare()


def test_a_run_recorded_before_mix_demo_resumes_and_another_share_is_refused(tmp_path):
    path = tmp_path / "a"
    make_run(path).prepare()
    save_checkpoint(path, 4)
    record = json.loads((path / "run.json").read_text())
    del record["settings"]["mix_demo"]  # as a run of an earlier version recorded it
    (path / "run.json").write_text(json.dumps(record))
    make_run(path, resume=True, mix_demo=0.0).prepare()
    assert json.loads((path / "run.json").read_text())["settings"]["mix_demo"] == 0.0
    with pytest.raises(UserInputError, match=r"data: mix_demo 0.0 \(now 0.25\)"):
        make_run(path, resume=True, mix_demo=0.25).prepare()


def test_resume_compares_folders_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "a", dataset_dir="data").prepare()
    save_checkpoint(tmp_path / "a", 4)
    make_run(tmp_path / "a", resume=True, dataset_dir=str(tmp_path / "data")).prepare()


def test_resume_without_its_checkpoint_is_refused_and_keeps_the_best_model(tmp_path):
    path = tmp_path / "a"
    make_run(path).prepare()
    best = path / "models" / "model.pt"
    best.parent.mkdir()
    best.write_bytes(b"the run's best weights")
    with pytest.raises(UserInputError) as refused:  # it would start over and replace model.pt at its first validation
        make_run(path, resume=True).prepare()
    message = str(refused.value)
    assert message.startswith(f"{path / 'models' / 'checkpoint_last.pt'}: missing") and "\n" not in message
    assert "--overwrite true (this deletes its model.pt)" in message
    assert best.read_bytes() == b"the run's best weights"
    assert len(json.loads((path / "run.json").read_text())["starts"]) == 1  # the refused resume is not recorded


def test_a_folder_a_training_runs_in_is_refused_to_a_second_training_and_a_resume(tmp_path):
    path = tmp_path / "a"
    run = make_run(path)
    run.prepare()
    save_checkpoint(path, 4)
    run.lock.release()  # as if the training had ended
    holder = hold_run_lock(path)  # another process training in the folder
    try:
        for second in (make_run(path, resume=True), make_run(path, overwrite=True)):
            with pytest.raises(UserInputError, match=rf"^{path}: a training is running .*process {holder} on host"):
                second.prepare()
    finally:
        end_process(holder)
    assert (path / "models" / "checkpoint_last.pt").is_file()  # the overwrite did not delete the holder's run
    assert len(json.loads((path / "run.json").read_text())["starts"]) == 1
    make_run(path, resume=True).prepare()  # its holder has ended: the lock it left is stale


def test_resume_needs_iterations_left_and_extends_the_run(tmp_path):
    path = tmp_path / "a"
    make_run(path, num_iterations=10).prepare()
    save_checkpoint(path, 10)
    with pytest.raises(UserInputError, match="has trained 10 iterations already; give --num_iterations larger"):
        make_run(path, resume=True, num_iterations=10).prepare()
    make_run(path, resume=True, num_iterations=30).prepare()
    assert json.loads((path / "run.json").read_text())["num_iterations"] == 30


def test_executed_config_is_the_running_parsers(tmp_path):
    parser = ConfigParser({"a": 1, "b": {"_target_": "scripts.workflows.executed_config"}})
    parser.update({"a": 2})
    parser.parse()
    assert parser.get_parsed_content("b")["a"] == 2
    assert executed_config() is None  # no parser running
    with pytest.raises(ValueError, match="needs the config as run"):
        TrainingRun(tmp_path, 10)


def test_training_evaluation_and_inference_default_to_distinct_run_folders(tmp_path):
    configs = Path(__file__).resolve().parents[1] / "bundle" / "configs"

    def folder(config: str, key: str) -> Path:
        parser = ConfigParser()
        parser.read_config(str(configs / config))
        parser["bundle_root"] = str(tmp_path)
        return Path(parser.get_parsed_content(key))

    train, evaluate = folder("train.json", "run_dir"), folder("evaluate.json", "output_dir")
    inference = folder("inference.json", "output_dir")
    assert train.parent == evaluate.parent == inference.parent == tmp_path / "runs"
    assert train.name.startswith("train-") and evaluate.name.startswith("evaluate-") and inference.name == "inference"
    assert not (tmp_path / "runs").exists()  # naming a folder creates nothing
