"""The run folder's lock: one holder at a time, named when another is refused, stale once its holder has ended."""

import json
import logging
import os

import pytest
from _workflow_data import end_process, hold_run_lock
from scripts.workflows.run_lock import LOCK_NAME, RunLock, RunLockedError


def test_a_held_lock_refuses_another_process_and_names_the_holder(tmp_path):
    holder = hold_run_lock(tmp_path)
    try:
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == holder and record["host"] == os.uname().nodename
        assert record["pid_namespace"] == os.readlink("/proc/self/ns/pid") and record["started"]
        with pytest.raises(RunLockedError) as refused:
            RunLock(tmp_path).acquire()
        message = str(refused.value)
        assert "\n" not in message and str(tmp_path) in message and f"process {holder} on host" in message
        assert "--resume true" in message and "--run_name" in message
    finally:
        end_process(holder)


def test_a_killed_holders_lock_is_taken_over_and_a_released_one_removed(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    holder = hold_run_lock(tmp_path)
    end_process(holder)  # kill -9: no clean-up, the lock file stays and the kernel drops the lock
    assert (tmp_path / LOCK_NAME).is_file()
    lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taken over from process {holder}" in caplog.text
    assert RunLock(tmp_path).acquire() is lock  # this process holds it already (a config resolved twice)
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    assert end_process(hold_run_lock(tmp_path, seconds=0), None) == 0  # a holder that ends normally leaves no lock file
    assert not (tmp_path / LOCK_NAME).exists()
