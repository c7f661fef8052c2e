"""Tests of scripts.errors' hooks: user errors and a background writer's full disk are one line, no traceback."""

import errno
import threading

import pytest
from scripts.errors import thread_excepthook


def run_thread(target) -> None:
    thread = threading.Thread(target=target, name="writer")
    thread.start()
    thread.join()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_a_background_writer_on_a_full_disk_is_one_warning_line(monkeypatch, capsys, code):
    monkeypatch.setattr(threading, "excepthook", thread_excepthook)

    def write():
        raise OSError(code, "File too large", "/runs/x/events.out.tfevents")

    run_thread(write)
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: writer: File too large (/runs/x/events.out.tfevents)"]


def test_any_other_thread_error_keeps_its_traceback(monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_excepthook(args, default=seen.append))

    def fail():
        raise OSError(errno.EACCES, "Permission denied", "/x")

    run_thread(fail)
    assert len(seen) == 1 and seen[0].exc_value.errno == errno.EACCES
