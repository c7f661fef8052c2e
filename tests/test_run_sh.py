"""run.sh refuses, before installing anything, to make environments that would not fit on the disk.

A full disk made pip fail minutes into `bash run.sh test` with one environment half installed; the check reads
`df`, which a stand-in on PATH replaces here.
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run(tmp_path: Path, command: str, free_gb: int | None) -> subprocess.CompletedProcess:
    """``bash run.sh command`` with ``free_gb`` GB free (None: ``df`` fails)."""
    shutil.copy(ROOT / "run.sh", tmp_path / "run.sh")
    fake_bin = tmp_path / "fake_bin"
    df = "exit 1" if free_gb is None else f"echo 'Size Used Avail Use% On'\necho '/dev/x 9 1 {free_gb * 1048576} 1% /'"
    _executable(fake_bin / "df", f"#!/bin/sh\n{df}\n")
    # a python that makes nothing: were the check gone, the test fails at once instead of installing
    _executable(fake_bin / "python", "#!/bin/sh\nexit 9\n")
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(fake_bin / "python")}
    return subprocess.run(["bash", "run.sh", command], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_environments_that_do_not_fit_are_not_started(tmp_path):
    result = _run(tmp_path, "test", free_gb=16)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: .venv .venv-deploy .venv-label need about 17 GB of disk to install, and 16 GB are free here; "
        "free some space and run again"
    )
    assert not (tmp_path / ".venv").exists()
    result = _run(tmp_path, "demo", free_gb=3)
    assert result.returncode == 1 and ".venv need about 4 GB" in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_environments_already_made_need_no_space(tmp_path):
    # .venv made: the two left need 13 GB, which fit; the set-up goes on (here to the stand-in python, which stops it)
    _executable(tmp_path / ".venv/bin/python", "#!/bin/sh\necho 'set-up reached' >&2\nexit 7\n")
    result = _run(tmp_path, "test", free_gb=13)
    assert result.returncode == 7 and result.stderr.strip() == "set-up reached"


def test_no_answer_from_df_is_no_check(tmp_path):
    result = _run(tmp_path, "demo", free_gb=None)
    assert result.returncode == 9 and "error:" not in result.stderr  # on to making .venv (the stand-in python)
