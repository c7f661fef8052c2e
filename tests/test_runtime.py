"""Inference process settings: the allocator that keeps freed memory, threads, and the silenced library noise.

The allocator and warning filters are per process, so what changes them runs in a child process.
"""

import os
import subprocess
import sys

import pytest
import torch
from _workflow_data import BUNDLE
from scripts import runtime
from scripts.errors import UserInputError
from scripts.runtime import configure_inference, free_cores, threads_for_free_cores, usable_cores, yes_no

# Allocates and frees a 64 MB tensor 20 times (as a forward does with its feature maps), after 10 times to reach a
# steady state, and prints the minor page faults of the 20.
CHURN = """
import resource, sys, torch
sys.path.insert(0, {bundle!r})
from scripts.runtime import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
for _ in range(10):  # steady state: the heap has grown to hold the block beside the small objects
    torch.ones(16 * 2**20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 * 2**20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=BUNDLE)


def churn_faults(keep: bool) -> int:
    run = child(CHURN.format(bundle=str(BUNDLE), keep=keep))
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keeping_freed_memory_removes_the_page_faults_of_reallocation():
    assert churn_faults(False) > 20 * 10_000  # each 64 MB block faulted in again: 16k pages of 4 kB
    # The same block reused without the kernel. Seen once in a full suite run: 3 x 16,384 faults, most likely the
    # kernel migrating kept pages in the background (proactive compaction is on here), each page then faulting once:
    # the least of three runs is the allocator's.
    assert min(churn_faults(True) for _ in range(3)) < 2_000


def test_library_noise_is_silenced_and_other_warnings_are_kept():
    code = (
        "import sys, warnings; sys.path.insert(0, {bundle!r})\n"
        "from scripts.runtime import quiet_known_noise\n"
        "if {quiet}: quiet_known_noise()\n"
        "from monai.transforms import LoadImage\n"
        "LoadImage()\n"
        "warnings.warn('a warning the user must read')\n"
    )
    noisy = child(code.format(bundle=str(BUNDLE), quiet=False))
    quiet = child(code.format(bundle=str(BUNDLE), quiet=True))
    assert "nvImageCodec" in noisy.stderr  # what the filter is for is still there without it
    assert "nvImageCodec" not in quiet.stderr and "a warning the user must read" in quiet.stderr


def test_configure_inference_options(monkeypatch):
    threads = torch.get_num_threads()  # this worker's, restored: the settings are the process's
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        settings = configure_inference("cpu", num_threads=None, keep_memory="false")
        free = settings.pop("free_cores")
        assert settings == {"device": "cpu", "threads": torch.get_num_threads(), "keep_freed_memory": False}
        assert settings["threads"] == threads_for_free_cores(free, usable_cores())
        assert configure_inference("cpu", num_threads=1, keep_memory=False)["free_cores"] is None  # as asked
        # OMP_NUM_THREADS set (a scheduler's, a user's, the test workers'): PyTorch's count from it, no probe
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(runtime, "free_cores", lambda *args: float(usable_cores()))
        torch.set_num_threads(1)
        settings = configure_inference("cpu", keep_memory=False)
        assert settings["threads"] == 1 and settings["free_cores"] is None
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(UserInputError, match="num_threads"):
        configure_inference("cpu", num_threads=-2)
    with pytest.raises(UserInputError, match="keep_freed_memory must be true or false"):
        configure_inference("cpu", keep_memory="maybe")


def test_yes_no_reads_text_as_meant():
    # in-process callers (the Deploy app, a notebook) may pass a config's text: "false" must be off, not bool("false")
    assert [yes_no(v, "amp") for v in (True, 1, "true", " True")] == [True] * 4
    assert [yes_no(v, "amp") for v in (False, 0, "false", "FALSE ")] == [False] * 4
    for value in ("off", "", 2, None):
        with pytest.raises(UserInputError, match="amp must be true or false"):
            yes_no(value, "amp")


def test_threads_follow_the_cores_found_idle():
    assert [threads_for_free_cores(free, 2) for free in (0.0, 0.4, 1.0, 1.4, 1.6, 2.0)] == [1, 1, 1, 1, 2, 2]
    assert threads_for_free_cores(7.9, 4) == 4 and threads_for_free_cores(None, 4) == 4  # no /proc/stat: all


def test_free_cores_sums_the_idle_shares_of_this_process_cores(monkeypatch):
    cores = sorted(os.sched_getaffinity(0))
    real = runtime._cpu_times(set(cores))
    assert real is not None and set(real) == set(cores)
    assert all(0 <= idle <= total for idle, total in real.values())
    assert 0.0 <= free_cores(0.05) <= len(cores) + 0.01
    # one core busy throughout, the others idle: 100 ticks pass on each, idle 0 on the first
    snapshots = iter([{c: (0, 0) for c in cores}, {c: (0 if c == cores[0] else 100, 100) for c in cores}])
    monkeypatch.setattr(runtime, "_cpu_times", lambda wanted: next(snapshots))
    assert free_cores(0.0) == pytest.approx(len(cores) - 1)
    monkeypatch.setattr(runtime, "_cpu_times", lambda wanted: None)
    assert free_cores(0.0) is None
