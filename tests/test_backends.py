"""scripts.backends and scripts.onnx_cache: the first call's check and fallbacks, what refuses onnxruntime, the ONNX
Runtime session's settings, the cache's keys, ownership and size, and the threads of an inference process."""

import logging
import os

import pytest
import torch
from _workflow_data import TINY_NETWORK
from scripts import backends
from scripts.backends import BackendNetwork, OnnxNetwork
from scripts.errors import UserInputError
from scripts.onnx_cache import CACHE_KIND, OnnxCache, cache_key
from scripts.ownership import folder_kind, mark_folder
from scripts.runtime import configure_inference
from scripts.weights import file_sha256


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny AMIR with random weights saved to a file, and a folder holding its cached ONNX model."""
    from scripts.networks import AMIR

    torch.manual_seed(0)
    net = AMIR(**{k: v for k, v in TINY_NETWORK.items() if k != "_target_"}).eval()
    folder = tmp_path_factory.mktemp("tiny")
    torch.save(net.state_dict(), folder / "w.pt")
    OnnxCache(folder / "cache").model(net, folder / "w.pt", TINY_NETWORK)
    return net, folder


def _warnings(caplog) -> list[str]:
    """The warnings captured: another test in the same worker may have left the bundle's logger at INFO."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _backend(tiny, backend="onnxruntime", **kwargs):
    net, folder = tiny
    options = {"weights_path": folder / "w.pt", "cache_dir": folder / "cache", "network_config": TINY_NETWORK}
    return BackendNetwork(net, backend, **{**options, **kwargs})


def test_a_mismatch_on_the_first_slice_restores_with_torch(tiny, monkeypatch, caplog, one_thread):
    x = torch.rand(1, 1, 24, 20)
    run = OnnxNetwork.__call__
    monkeypatch.setattr(OnnxNetwork, "__call__", lambda self, y: run(self, y) + 1e-3)
    network = _backend(tiny)
    with caplog.at_level(logging.INFO), torch.inference_mode():
        out = network(x)
        expected = tiny[0](x)
    assert torch.equal(out, expected) and network.choice == "torch"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        warning
        == f"{tiny[1] / 'w.pt'}: ONNX Runtime differs from PyTorch by 0.001 (> 0.0001) on a 24x20 slice; using torch."
    )


def test_each_new_slice_size_is_checked(tiny, monkeypatch, caplog, one_thread):
    network = _backend(tiny)
    small, large = torch.rand(1, 1, 24, 20), torch.rand(1, 1, 40, 36)
    with torch.inference_mode():
        assert (network(small) - tiny[0](small)).abs().max() <= 1e-4 and network.choice == "onnxruntime"
        run = OnnxNetwork.__call__
        monkeypatch.setattr(OnnxNetwork, "__call__", lambda self, y: run(self, y) + 1e-3)  # wrong from now on
        assert torch.equal(network(small), run(network.onnx, small) + 1e-3)  # a checked size: not checked again
        with caplog.at_level(logging.WARNING):
            assert torch.equal(network(large), tiny[0](large))  # a new size: checked, torch's output
        assert network.choice == "torch" and torch.equal(network(small), tiny[0](small))
    assert _warnings(caplog) == [
        f"{tiny[1] / 'w.pt'}: ONNX Runtime differs from PyTorch by 0.001 (> 0.0001) on a 40x36 slice; using torch."
    ]


def test_a_failed_export_restores_with_torch(tiny, tmp_path, monkeypatch, caplog, one_thread):
    def fail(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(OnnxCache, "model", fail)
    network = _backend(tiny, "auto", cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        x = torch.rand(1, 1, 24, 20)
        assert torch.equal(network(x), tiny[0](x))
    assert network.choice == "torch"
    assert _warnings(caplog) == [f"{tiny[1] / 'w.pt'}: no ONNX model (RuntimeError: cannot trace this); using torch."]


def test_auto_chooses_an_engine_whose_output_matches(tiny, caplog, one_thread):
    network = _backend(tiny, "auto")
    x = torch.rand(2, 1, 33, 27)
    with caplog.at_level(logging.INFO), torch.inference_mode():
        first, second = network(x), network(x)
        expected = tiny[0](x)
    assert network.choice in ("torch", "onnxruntime") and isinstance(network.onnx, OnnxNetwork)
    assert set(network.state_dict()) == {f"network.{k}" for k in tiny[0].state_dict()}  # the network's, once
    assert (first - expected).abs().max() <= 1e-4 and (second - expected).abs().max() <= 1e-4
    (line,) = [r.getMessage() for r in caplog.records if "backend auto:" in r.getMessage()]
    assert line.startswith(f"backend auto: {network.choice} (ONNX Runtime matches PyTorch within")
    assert "per call of (2, 1, 33, 27)" in line


def test_what_keeps_auto_on_torch_and_refuses_onnxruntime(tiny, tmp_path, monkeypatch, caplog):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("the user's")
    with caplog.at_level(logging.INFO):
        assert _backend(tiny, "auto", device="cuda").choice == "torch"
        assert _backend(tiny, "auto", amp=True).choice == "torch"
        assert _backend(tiny, "auto", compile="true").choice == "torch"
        assert _backend(tiny, "auto", cache_dir=user).choice == "torch"
        assert _backend(tiny, "auto", compile="false").choice == ""  # chosen on the first call
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"backend auto: torch (the ONNX cache cannot be used: {user} is a folder the bundle did not "
                        "create as its ONNX cache (no .amir-bundle.json of that kind))"]  # fmt: skip
    for kwargs, message in (
        ({"amp": True}, "backend onnxruntime: amp is a torch feature; use --backend torch or auto"),
        ({"compile": True}, "backend onnxruntime: compile is a torch feature; use --backend torch or auto"),
        ({"weights_path": None}, "backend onnxruntime: no weights file to key the ONNX cache"),
        ({"cache_dir": user}, f"{user} is a folder the bundle did not create as its ONNX cache"),
        ({"cache_dir": user / "notes.txt"}, f"{user / 'notes.txt'} is a file; give --onnx_cache_dir another folder"),
    ):
        with pytest.raises(UserInputError, match="^" + message):
            _backend(tiny, "onnxruntime", **kwargs)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]  # the user's folder is left as it was
    monkeypatch.setattr(backends, "has_ort", False)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _backend(tiny, "auto").choice == "torch"
    assert _warnings(caplog) == ["backend auto: torch (onnxruntime is not installed)"]
    with pytest.raises(UserInputError, match="^backend onnxruntime: onnxruntime is not installed"):
        _backend(tiny, "onnxruntime")
    with pytest.raises(UserInputError, match="^backend 'TensorRT': use one of auto, torch, onnxruntime"):
        _backend(tiny, "TensorRT")


def test_session_settings_follow_the_process_threads(tiny):
    model = next((tiny[1] / "cache").glob("*.onnx"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        options = OnnxNetwork(model).session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
        assert OnnxNetwork(model, threads=2).session.get_session_options().intra_op_num_threads == 2
    finally:
        torch.set_num_threads(threads)
    assert options.graph_optimization_level == backends.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.enable_cpu_mem_arena


def test_inference_threads_are_at_most_the_usable_cores():
    affinity, threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:
        os.sched_setaffinity(0, {min(affinity)})  # as a container's cpuset or taskset gives a process one core
        torch.set_num_threads(max(2, threads))
        assert configure_inference("cpu", keep_memory=False)["threads"] == 1
        torch.set_num_threads(2)
        assert configure_inference("cpu", num_threads=2, keep_memory=False)["threads"] == 2  # as asked
    finally:
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)


def test_cache_key_entries_and_size(tiny, tmp_path):
    name, key = cache_key("ab" * 32, TINY_NETWORK)
    assert cache_key("ab" * 32, dict(reversed(TINY_NETWORK.items())))[0] == name  # the config's order is no change
    assert cache_key("cd" * 32, TINY_NETWORK)[0] != name
    assert cache_key("ab" * 32, {**TINY_NETWORK, "moe_combine": "linear"})[0] != name
    assert cache_key("ab" * 32, TINY_NETWORK, opset_version=18)[0] != name
    cache = OnnxCache(tiny[1] / "cache")
    assert folder_kind(cache.folder) == CACHE_KIND
    (model,) = cache.folder.glob("*.onnx")
    assert cache.damage(model.stem, cache_key(file_sha256(tiny[1] / "w.pt"), TINY_NETWORK)[1]) is None
    assert cache.damage(model.stem, key) == f"{model.stem}.json records another key"

    folder = tmp_path / "cache"
    folder.mkdir()
    mark_folder(folder, CACHE_KIND)
    for i in range(4):
        for suffix in (".onnx", ".json"):
            (folder / f"{i:032x}{suffix}").write_text("x")
            os.utime(folder / f"{i:032x}{suffix}", (1000 + i, 1000 + i))
    removed = OnnxCache(folder).prune(keep=2)
    assert sorted(p.name for p in removed) == [f"{i:032x}{s}" for i in (0, 1) for s in (".json", ".onnx")]
    assert sorted(p.name for p in folder.iterdir()) == [".amir-bundle.json"] + [
        f"{i:032x}{s}" for i in (2, 3) for s in (".json", ".onnx")
    ]
