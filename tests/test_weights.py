"""Verified weight loading: every bad checkpoint is one line naming the file and the cause, never a wrong image.

Function-level cases for every loader (inference/evaluation handler, export, analysis, resume) and the real CLI of
``configs/inference.json`` for each kind of bad file: exit 1, one ``error:`` line, nothing written.
"""

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from _workflow_data import BUNDLE, TINY_NETWORK, bundle_command, run_side_by_side, tiny_network_config
from ignite.engine import Engine
from scripts.errors import UserInputError
from scripts.ownership import mark_folder
from scripts.weights import WeightsLoader, file_sha256, load_checkpoint, load_weights, run_weights
from scripts.workflows import saved_iteration
from torch import nn

#: What PyTorch suggests after a refused load, and a user must never be told to do.
UNSAFE_HINT = "weights_only"


class Payload:
    """An object whose unpickling would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 1, 3))


def _damaged(good: bytes, tensor: torch.Tensor) -> bytes:
    """``good`` with one bit of a tensor's stored bytes flipped (the zip structure intact)."""
    start = good.index(tensor.detach().numpy().tobytes())
    data = bytearray(good)
    data[start + 5] ^= 0x10
    return bytes(data)


def bad_files(folder, network: nn.Module) -> dict[str, tuple]:
    """Checkpoint files of every kind that must be refused: name -> (path, expected words in the message)."""
    good = folder / "good.pt"
    torch.save(network.state_dict(), good)
    data = good.read_bytes()
    cases = {
        "missing": (folder / "none.pt", "no such weights file"),
        "empty": (folder / "empty.pt", "is empty"),
        "truncated": (folder / "truncated.pt", "truncated"),
        "random": (folder / "random.pt", "not a checkpoint"),
        "damaged": (folder / "damaged.pt", "fails its CRC check"),
        "code": (folder / "code.pt", "refused for safety"),
        "list": (folder / "list.pt", "wrong content"),
        "shape": (folder / "shape.pt", "has shape (8, 1, 3, 3) in the file, (4, 1, 3, 3) in the network"),
        "keys": (folder / "keys.pt", "is not in the file"),
    }
    cases["empty"][0].write_bytes(b"")
    cases["truncated"][0].write_bytes(data[: len(data) // 2])
    cases["random"][0].write_bytes(np.random.default_rng(0).bytes(4096))
    cases["damaged"][0].write_bytes(_damaged(data, max(network.state_dict().values(), key=torch.numel)))
    torch.save({"model": Payload()}, cases["code"][0])
    torch.save([1, 2], cases["list"][0])
    torch.save(nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 1, 3)).state_dict(), cases["shape"][0])
    torch.save({"0.weight": torch.zeros(4, 1, 3, 3)}, cases["keys"][0])
    return cases


def test_every_bad_checkpoint_is_one_line_naming_the_file(tmp_path):
    cases = bad_files(tmp_path, _net())
    for name, (path, words) in cases.items():
        with pytest.raises(UserInputError) as caught:
            load_weights(_net(), path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and words in message, (name, message)
        assert "\n" not in message and UNSAFE_HINT not in message, (name, message)
    assert "--network_def" in str(pytest.raises(UserInputError, load_weights, _net(), cases["shape"][0]).value)


def test_damaged_bytes_load_without_the_check(tmp_path):
    # the case the check exists for: torch.load itself reads the damaged tensor without a word
    network = _net()
    path = bad_files(tmp_path, network)["damaged"][0]
    loaded = torch.load(path, weights_only=True)
    assert not torch.equal(loaded["0.weight"], network[0].weight.detach())
    with pytest.raises(UserInputError, match="CRC"):
        load_checkpoint(path)


def test_good_weights_load_strictly_from_a_state_dict_or_a_training_checkpoint(tmp_path):
    network = _net()
    torch.save(network.state_dict(), tmp_path / "state.pt")
    torch.save({"model": network.state_dict(), "trainer": {"iteration": 3}}, tmp_path / "ckpt.pt")
    for name in ("state.pt", "ckpt.pt"):
        fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 1, 3)).train()
        assert load_weights(fresh, tmp_path / name) is fresh and not fresh.training
        pairs = zip(fresh.state_dict().values(), network.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    assert saved_iteration(tmp_path / "ckpt.pt") == 3


def test_handler_loads_when_attached_and_resume_reads_through_the_check(tmp_path):
    network = _net()
    cases = bad_files(tmp_path, network)
    fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 1, 3))
    engine = Engine(lambda engine, batch: None)
    WeightsLoader(tmp_path / "good.pt", {"model": fresh}).attach(engine)
    assert not torch.equal(fresh[0].weight, network[0].weight)  # loaded when the engine starts, not before
    engine.run([0])
    assert torch.equal(fresh[0].weight, network[0].weight)
    engine = Engine(lambda engine, batch: pytest.fail("ran with damaged weights"))
    WeightsLoader(cases["damaged"][0], {"model": fresh}).attach(engine)
    with pytest.raises(UserInputError, match="fails its CRC check"):
        engine.run([0])
    with pytest.raises(UserInputError, match="truncated"):
        saved_iteration(cases["truncated"][0])  # the resume check of a training run


def test_export_and_analysis_load_through_the_check(tmp_path):
    from scripts.analysis import load_network_weights
    from scripts.export import load_weights as export_load

    cases = bad_files(tmp_path, _net())
    for loader in (export_load, load_network_weights):
        with pytest.raises(UserInputError, match="fails its CRC check"):
            loader(_net(), cases["damaged"][0], "cpu")


def test_run_weights_are_the_named_training_runs(tmp_path):
    runs = tmp_path / "runs"
    default = tmp_path / "model.pt"
    assert run_weights(default, runs, None) == str(default)
    (runs / "amir" / "models").mkdir(parents=True)
    with pytest.raises(UserInputError, match="not a training run"):
        run_weights(default, runs, "amir")  # a folder without the run marker
    mark_folder(runs / "amir", "run")
    with pytest.raises(UserInputError, match="has no best model yet"):
        run_weights(default, runs, "amir")
    torch.save(_net().state_dict(), runs / "amir" / "models" / "model.pt")
    assert run_weights(default, runs, "amir") == str(runs / "amir" / "models" / "model.pt")
    with pytest.raises(UserInputError, match="not a plain folder name"):
        run_weights(default, runs, "../amir")


def test_file_sha256_is_the_digest_of_the_bytes(tmp_path):
    import hashlib

    (tmp_path / "w.pt").write_bytes(b"weights")
    assert file_sha256(tmp_path / "w.pt") == hashlib.sha256(b"weights").hexdigest()


def test_inference_cli_refuses_every_bad_checkpoint(tmp_path):
    """Through ``configs/inference.json``: one error line, exit 1, no output folder, the input untouched."""
    from scripts.networks import AMIR

    inputs = tmp_path / "in"
    inputs.mkdir()
    image = np.random.default_rng(0).uniform(-1000, 500, (24, 24, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([0.8, 0.8, 2.0, 1.0])), inputs / "ct.nii.gz")
    before = (inputs / "ct.nii.gz").read_bytes()
    tiny = AMIR(**{k: v for k, v in TINY_NETWORK.items() if k != "_target_"})
    weights = tmp_path / "weights"
    weights.mkdir()
    # the file-level refusals (the shape and key cases are the network's, checked above)
    files = {
        name: case
        for name, case in bad_files(weights, tiny).items()
        if name in ("missing", "empty", "truncated", "random", "damaged", "code")
    }
    files["network_def"] = (BUNDLE / "models" / "model.pt", "do not fit the network")
    network_def = tiny_network_config(tmp_path / "tiny.json")
    commands = [
        bundle_command("--config_file", "configs/inference.json", "--dataset_dir", str(inputs), "--output_dir",
                       str(tmp_path / f"out_{name}"), "--modality", "ct", "--ckpt_path", str(path),
                       "--network_def", network_def)
        for name, (path, _) in files.items()
    ]  # fmt: skip
    for (name, (path, words)), result in zip(files.items(), run_side_by_side(commands), strict=True):
        out = tmp_path / f"out_{name}"
        assert result.returncode == 1, (name, result.stderr[-2000:])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {path}: ") and words in errors[0], (name, errors)
        assert "Traceback" not in result.stderr and UNSAFE_HINT not in result.stderr, name
        assert not out.exists(), name
    assert (inputs / "ct.nii.gz").read_bytes() == before
