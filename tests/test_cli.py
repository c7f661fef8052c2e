"""Unknown command-line options are refused with the closest valid id; known ones, ``#`` paths into them and MONAI's
own run arguments pass; a process that is not ``python -m monai.bundle run`` is never checked."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from _workflow_data import BUNDLE, bundle_command
from scripts.cli import MONAI_RUN_ARGUMENTS, command_line_options, launched_by_bundle_run, refuse_unknown_options
from scripts.errors import UserInputError
from scripts.ownership import mark_folder
from scripts.workflows.runs import RUN_KIND

MAIN = str(BUNDLE.parent / ".venv" / "lib" / "monai" / "bundle" / "__main__.py")
CONFIGS = ["train.json", "evaluate.json", "inference.json", "analyze.json"]


@pytest.fixture
def as_bundle_run(monkeypatch):
    """Make this process look like ``python -m monai.bundle run`` to :func:`launched_by_bundle_run`."""
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", SimpleNamespace(name="monai.bundle.__main__"))


def test_options_are_read_as_fire_reads_them():
    args = ["training", "--config_file", "c.json", "--num-iterations=20", "--amp", "--network_def#dim", "8", "--", "x"]
    assert command_line_options(args) == {
        "config_file": "c.json",
        "num_iterations": "20",
        "amp": None,
        "network_def#dim": "8",
    }
    assert {"config_file", "meta_file", "logging_file", "tracking", "args_file", "run_id", "init_id"} <= set(
        MONAI_RUN_ARGUMENTS
    )


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_refuses_a_misspelled_option(config, as_bundle_run, tmp_path):
    argv = [MAIN, "run", "--config_file", str(BUNDLE / "configs" / config), "--bundle_root", str(BUNDLE)]
    refuse_unknown_options(argv)  # its own ids and MONAI's arguments pass
    refuse_unknown_options([*argv, "--network_def#dim", "8", "--logging_file", "x.conf", "--tracking", "mlflow"])
    with pytest.raises(UserInputError, match=r"unknown option --network_deff: .* did you mean --network_def\?"):
        refuse_unknown_options([*argv, "--network_deff", "{}"])
    with pytest.raises(UserInputError, match=r"unknown option --nonsense_xyz.*see the options in the README"):
        refuse_unknown_options([*argv, "--nonsense_xyz#a", "1"])


def test_stacked_configs_and_args_file(as_bundle_run, tmp_path):
    stack = str([str(BUNDLE / "configs" / c) for c in ("train.json", "multi_gpu_train.json")])
    refuse_unknown_options([MAIN, "run", "--config_file", stack, "--train#sampler#num_replicas", "2"])
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"config_file": str(BUNDLE / "configs" / "train.json"), "num_iteration": 20}))
    with pytest.raises(UserInputError, match="did you mean --num_iterations"):
        refuse_unknown_options([MAIN, "run", "--args_file", str(args_file)])


def test_other_processes_are_never_checked():
    # pytest's own command line (as MONAI Label's or the Deploy app's) is not a bundle command line
    argv = [MAIN, "run", "--config_file", str(BUNDLE / "configs" / "train.json"), "--num_iteration", "20"]
    assert not launched_by_bundle_run(argv)
    refuse_unknown_options(argv)
    refuse_unknown_options()


def test_training_typo_is_refused_before_anything_starts(tmp_path):
    """The issue's case: ``--num_iteration 20`` started a 200,000-iteration run; now one line, exit 1, no run."""
    runs = tmp_path / "runs"
    result = subprocess.run(
        bundle_command("training", "--config_file", "configs/train.json", "--runs_dir", str(runs), "--run_name", "t",
                       "--num_iteration", "20", "--dataset_dir", str(tmp_path / "no_data")),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: unknown option --num_iteration: configs/train.json has no id 'num_iteration'; "
        "did you mean --num_iterations?"
    )
    assert "Traceback" not in result.stderr and not runs.exists()


@pytest.mark.parametrize("config", CONFIGS[:3])
def test_yes_no_options_read_as_meant(config, as_bundle_run):
    """Fire passes ``false`` on as the text 'false', which ``if overwrite:`` reads as on: refused, not obeyed."""
    argv = [MAIN, "run", "--config_file", str(BUNDLE / "configs" / config)]
    for value in ("True", "False", "true", "TRUE", "0", "1"):
        refuse_unknown_options([*argv, "--amp", value])
    refuse_unknown_options([*argv, "--amp"])  # a bare flag is True to Fire
    refuse_unknown_options([*argv, "--amp_dtype", "false"])  # not a yes/no option: its own rules apply
    for value, shown in (("false", "'false'"), ("no", "'no'"), ("off", "'off'"), ("2", "2")):
        with pytest.raises(
            UserInputError,
            match=rf"^--amp {shown}: a yes/no option takes True or False; .*"
            r"Write --amp False \(or leave it out: it is False by default\)$",
        ):
            refuse_unknown_options([*argv, "--amp", value])


def test_computed_yes_no_options(as_bundle_run):
    argv = [MAIN, "run", "--config_file", str(BUNDLE / "configs" / "train.json")]
    refuse_unknown_options([*argv, "--vary_degradations", "False"])
    with pytest.raises(UserInputError, match=r"^--vary_degradations 'false': .*by default it is computed\)$"):
        refuse_unknown_options([*argv, "--vary_degradations", "false"])


def test_overwrite_false_does_not_replace_a_run(tmp_path):
    """The case that found it: ``--overwrite false`` on an earlier run's name would have started it again."""
    run = tmp_path / "runs" / "t"
    (run / "models").mkdir(parents=True)
    mark_folder(run, RUN_KIND)  # an earlier run of the bundle, which --overwrite true would delete
    (run / "models" / "model.pt").write_bytes(b"kept")
    result = subprocess.run(
        bundle_command("training", "--config_file", "configs/train.json", "--runs_dir", str(tmp_path / "runs"),
                       "--run_name", "t", "--overwrite", "false", "--dataset_dir", str(tmp_path / "no_data")),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: --overwrite 'false': a yes/no option takes")
    assert "Traceback" not in result.stderr and (run / "models" / "model.pt").read_bytes() == b"kept"
