"""Fixtures shared by the test modules, and how the suite runs on pytest-xdist's workers (pyproject's addopts)."""

import logging
import os

import pytest
import torch

#: The test modules that cost the most (CPU seconds of a serial run, most first: 139 down to 18 of 1008). pytest-xdist's
#: ``--dist loadfile`` hands out whole modules in collection order, so these go first: the workers then end
#: together on the many short modules instead of one starting a long one last.
SLOWEST_FIRST = (
    "test_label_server.py",
    "test_configs_train.py",
    "test_configs_train_folder.py",
    "test_configs_inference_inputs.py",
    "test_demo.py",
    "test_configs_evaluate_stacks.py",
    "test_data_demo.py",
    "test_configs_inference_outputs.py",
    "test_weights.py",
    "test_configs_evaluate.py",
    "test_deploy_app.py",
    "test_bundle_run_anywhere.py",
    "test_bundle_modelzoo.py",
    "test_configs_inference.py",
    "test_configs_analyze.py",
    "test_data_corpus.py",
    "test_networks_amir.py",
    "test_bench_gpu.py",
    "test_workflows_ema.py",
    "test_runtime.py",
    "test_bundle_zoo_tree.py",
)


def pytest_configure(config):
    """On an xdist worker: one thread for torch here and in the processes tests start, as the workers share the
    cores (2 workers on 2 cores: a second thread each would only spin)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """On an xdist worker, the modules of :data:`SLOWEST_FIRST` first (in its order), the rest as collected."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def restore_logging():
    """Restore the root logger after a test applies the bundle's logging.conf."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def one_thread():
    """Run a test on one thread: tiny networks are slower on two busy cores than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
