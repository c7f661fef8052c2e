"""Inference process settings: the allocator that keeps freed memory, threads, and the silenced library noise.

The allocator and warning filters are per process, so what changes them runs in a child process.
"""

import subprocess
import sys

import pytest
import torch
from _workflow_data import BUNDLE
from scripts.errors import UserInputError
from scripts.runtime import configure_inference

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


def test_configure_inference_options():
    settings = configure_inference("cpu", num_threads=None, keep_memory="false")
    assert settings == {"device": "cpu", "threads": torch.get_num_threads(), "keep_freed_memory": False}
    with pytest.raises(UserInputError, match="num_threads"):
        configure_inference("cpu", num_threads=-2)
    with pytest.raises(UserInputError, match="keep_freed_memory must be true or false"):
        configure_inference("cpu", keep_memory="maybe")
