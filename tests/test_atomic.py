"""Tests of scripts.atomic: unique temporary names, whole files only, the bundle's own leftovers cleaned."""

from __future__ import annotations

import errno
import os
import stat
import time

import numpy as np
import pytest
from _workflow_data import dead_pid
from scripts import atomic
from scripts.atomic import (
    STALE_AGE_S,
    TEMP_TAG,
    DiskFullError,
    atomic_folder,
    atomic_path,
    remove_stale_temporaries,
    temporary_name,
    write_text_atomic,
    writer_origin,
)
from scripts.errors import UserInputError
from scripts.ownership import MARKER, folder_kind
from scripts.workflows import save_png


def test_two_writers_into_one_folder_get_different_temporary_names(tmp_path):
    target = tmp_path / "metrics.md"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert TEMP_TAG in first.name and first.name.startswith(".metrics.md")
        first.write_text("one")
        second.write_text("two")
    assert target.read_text() == "one"  # the writer that finished last (the outer block) wins, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.md"]


def test_result_is_an_ordinary_file_and_keeps_the_extension(tmp_path):
    target = tmp_path / "sub" / "image.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text_atomic("old", target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_only_leftovers_of_dead_bundle_writers_are_removed(tmp_path):
    (tmp_path / "figures").mkdir()
    stale = tmp_path / "figures" / f"{temporary_name('a.png', dead_pid())}abc.png"
    own = tmp_path / f"{temporary_name('b.md')}def.md"  # this process's write in progress
    users = [tmp_path / ".c.png.tmp", tmp_path / f".d{TEMP_TAG}notapid.png", tmp_path / MARKER]
    for path in (stale, own, *users):
        path.write_text("partial")
    assert remove_stale_temporaries(tmp_path) == []  # not recursive: the stale one is in a subfolder
    assert remove_stale_temporaries(tmp_path, recursive=True) == [stale]
    assert own.exists() and all(p.exists() for p in users) and not stale.exists()
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_temporaries_of_another_host_or_pid_namespace_are_kept_until_stale(tmp_path):
    dead = dead_pid()  # gone here; in another container the same number may be a live writer
    here = tmp_path / f"{temporary_name('a.png', dead)}abc12345.png"
    elsewhere = tmp_path / f"{temporary_name('b.png', dead, origin='0123456789ab')}abc12345.png"
    unknown = tmp_path / f".c.png{TEMP_TAG}{dead}-abc123xy.png"  # a name without origin, as older bundles wrote
    for path in (here, elsewhere, unknown):
        path.write_text("partial")
    assert remove_stale_temporaries(tmp_path) == [here]
    assert elsewhere.exists() and unknown.exists()
    old = time.time() - STALE_AGE_S - 60  # unchanged for longer than any write takes
    for path in (elsewhere, unknown):
        os.utime(path, (old, old))
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([elsewhere, unknown])


def test_the_writer_origin_is_the_host_and_pid_namespace(monkeypatch):
    assert temporary_name("x").endswith(f"{TEMP_TAG}{os.getpid()}-{writer_origin()}-")
    own = writer_origin()
    monkeypatch.setattr(atomic.os, "readlink", lambda path: "pid:[1]")  # another PID namespace on this host
    writer_origin.cache_clear()
    try:
        assert writer_origin() != own
    finally:
        monkeypatch.undo()
        writer_origin.cache_clear()
    assert writer_origin() == own


def test_a_write_failing_for_want_of_space_is_one_error_naming_the_folder(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text_atomic("old", target)
    with pytest.raises(DiskFullError) as raised, atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    message = str(raised.value)
    assert message.startswith(f"{tmp_path}: cannot write metrics.csv: No space left on device") and "\n" not in message
    assert "free space there" in message and isinstance(raised.value, UserInputError)
    assert raised.value.folder == tmp_path
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_png_is_written_atomically(tmp_path):
    save_png(np.zeros((4, 5), np.uint8), tmp_path / "f.png")
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_a_folder_replaces_only_the_bundles_own_and_a_failure_leaves_the_old_one(tmp_path):
    target = tmp_path / "series"
    with atomic_folder(target, "dicom-output") as tmp:
        (tmp / "1.dcm").write_text("first")
    assert folder_kind(target) == "dicom-output" and stat.S_IMODE(target.stat().st_mode) == 0o755
    with pytest.raises(RuntimeError), atomic_folder(target, "dicom-output") as tmp:
        (tmp / "1.dcm").write_text("half")
        raise RuntimeError("killed")
    assert (target / "1.dcm").read_text() == "first"
    with atomic_folder(target, "dicom-output") as tmp:
        (tmp / "1.dcm").write_text("second")
    assert (target / "1.dcm").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # no temporary folder left
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="left untouched"), atomic_folder(users, "dicom-output"):
        pass
    assert (users / "notes.txt").read_text() == "mine"
