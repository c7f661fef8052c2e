"""Fixtures shared by the test modules."""

import logging

import pytest


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
