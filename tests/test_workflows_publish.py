"""Publishing a run's best weights to models/model.pt: only for a run that started from that file (MONAI Label's
``pretrained`` loader); the Label settings of train.json. The real Label run is in test_label_server.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.handlers import CheckpointLoader
from scripts.errors import UserInputError
from scripts.weights import WeightsLoader
from scripts.workflows.publish import publish_best, started_from

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


def weights(path: Path, value: float) -> dict[str, torch.Tensor]:
    state = {"w": torch.full((2, 2), value)}
    torch.save(state, path)
    return state


@pytest.fixture
def files(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "runs").mkdir()
    target, best = tmp_path / "models" / "model.pt", tmp_path / "runs" / "model.pt"
    return target, best, weights(target, 0.0), weights(best, 1.0)


def label_loader(path: Path) -> CheckpointLoader:
    """What MONAI Label's BundleTrainTask puts first among train#handlers with "pretrained": true."""
    return CheckpointLoader(load_path=str(path), load_dict={"model": torch.nn.Linear(2, 2)}, strict=False)


def test_a_run_that_started_from_the_target_publishes_its_best(files, monkeypatch):
    target, best, _, trained = files
    monkeypatch.chdir(target.parent)  # the same file by another name
    inode = target.stat().st_ino
    assert started_from([object(), label_loader(Path("model.pt"))], target)
    assert publish_best(best, target, [label_loader(target)])
    published = torch.load(target, weights_only=True)
    assert torch.equal(published["w"], trained["w"])
    assert target.stat().st_ino != inode  # a new file renamed into place: Label's cache (by mtime) reloads
    assert [p.name for p in target.parent.iterdir()] == ["model.pt"]  # no temporary left


@pytest.mark.parametrize(
    "handlers",
    [[], "other file", "weights loader"],
    ids=["command-line run", "Label run from another model_filename", "bundle's own loader"],
)
def test_a_run_that_did_not_start_from_the_target_leaves_it(files, handlers):
    target, best, original, _ = files
    if handlers == "other file":
        handlers = [label_loader(best)]
    elif handlers == "weights loader":
        handlers = [WeightsLoader(target, {"model": torch.nn.Linear(2, 2)})]
    assert not started_from(handlers, target)
    assert not publish_best(best, target, handlers)
    assert torch.equal(torch.load(target, weights_only=True)["w"], original["w"])


def test_no_best_weights_leaves_the_target(files):
    target, best, original, _ = files
    best.unlink()
    assert not publish_best(best, target, [label_loader(target)])
    assert torch.equal(torch.load(target, weights_only=True)["w"], original["w"])


def test_damaged_best_weights_are_one_error_and_leave_the_target(files):
    target, best, original, _ = files
    best.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match=str(best)):
        publish_best(best, target, [label_loader(target)])
    assert torch.equal(torch.load(target, weights_only=True)["w"], original["w"])


def train_config(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update(overrides)
    return parser


def test_label_modality_option_sets_the_task_and_keeps_the_pairs():
    """Label sets ``displayable_configs`` from its request: the items' task, and no drawn degradations (the
    datastore's low-quality images are the inputs); the command line's --modality keeps working."""
    label = train_config(displayable_configs={"modality": "pet"})
    assert label.get_parsed_content("modality") == "pet"
    assert not label.get_parsed_content("vary_degradations") and label.get_parsed_content("dose_range") is None
    cli = train_config(modality="ct")
    assert cli.get_parsed_content("modality") == "ct" and cli.get_parsed_content("vary_degradations")
    assert train_config().get_parsed_content("modality") is None
    assert train_config()["run"][-1] == "$@publish_best()"
