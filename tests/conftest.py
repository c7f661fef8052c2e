"""Fixtures shared by the test modules."""

import logging

import pytest
import torch


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
