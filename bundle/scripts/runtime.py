"""Process settings for fast CPU inference, and the silencing of library warnings that say nothing to a user.

Why the allocator: a forward of the paper AMIR on a 256 x 256 slice allocates feature maps of 10 to 70 MB. glibc
serves blocks above its mmap threshold (at most 32 MB) with ``mmap`` and returns them with ``munmap`` on free, and
trims the top of the heap above 128 kB, so every forward faults the same memory back in page by page: about 1.3
million minor page faults per slice, 15 to 40 % of the CPU time in the kernel. Keeping freed memory in the
process (no mmap for malloc, no trimming) removes the faults; the peak memory stays the same, since the same
blocks are reused. :func:`configure_inference` does this through ``mallopt`` (glibc only; elsewhere nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import re
import time
import warnings

import torch

from .errors import UserInputError

__all__ = [
    "KNOWN_NOISE",
    "configure_inference",
    "free_cores",
    "keep_freed_memory",
    "quiet_known_noise",
    "threads_for_free_cores",
    "usable_cores",
    "yes_no",
]

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int

#: (logger or warning category's module, start of the message) of library notices that only concern an optional
#: GPU decoder the bundle does not use: MONAI's LoadImage builds its nvImageCodec DICOM reader on every
#: instantiation and warns twice when CuPy / nvImageCodec are missing, on machines with or without a GPU.
KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    ("monai.data.nvimgcodec_pydicom_plugin", "nvImageCodec is not available"),
    ("monai.data.image_reader", "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register"),
)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's or ``taskset``'s share of the machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times(cores: set[int]) -> dict[int, tuple[int, int]] | None:
    """(idle, total) jiffies of each of ``cores`` from ``/proc/stat``; None where it cannot be read (not Linux)."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            # user nice system idle iowait irq softirq steal (guest time is already in user)
            ticks = [int(f) for f in fields[:8]]
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times or None


def free_cores(interval: float = 0.25) -> float | None:
    """How many of this process's cores (:func:`usable_cores`) were idle over the next ``interval`` seconds.

    Returns:
        The sum of their idle shares (2.0: two idle cores; 1.0: one core's worth busy); None where ``/proc/stat``
        is not there.
    """
    try:
        cores = os.sched_getaffinity(0)
    except AttributeError:
        return None
    before = _cpu_times(cores)
    time.sleep(interval)
    after = _cpu_times(cores)
    if before is None or after is None:
        return None
    free = 0.0
    for core, (idle, total) in after.items():
        if core in before and total > before[core][1]:
            free += (idle - before[core][0]) / (total - before[core][1])
    return free


def threads_for_free_cores(free: float | None, usable: int) -> int:
    """Intra-op threads for a process that finds ``free`` idle cores of its ``usable`` ones at start.

    More threads than free cores share a core with another job: an OpenMP thread that waits at a barrier for a
    descheduled peer spins, so the restoration costs more CPU time for no gain in wall time (measured beside one
    busy core of two: 2 threads 10.2 CPU-s per slice, 1 thread 8.1, ``bench/shared_cpu.py``).
    """
    if free is None:
        return usable
    return max(1, min(usable, int(free + 0.5)))


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (no mmap for malloc, no trim). False where not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    except (OSError, AttributeError):
        return False


class _MessageFilter(logging.Filter):
    """Drop the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_known_noise() -> None:
    """Silence :data:`KNOWN_NOISE` (those exact messages only; every other warning is kept). Safe to call twice."""
    for source, prefix in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=re.escape(prefix), category=UserWarning)
        log = logging.getLogger(source)
        if not any(isinstance(f, _MessageFilter) and f.prefix == prefix for f in log.filters):
            log.addFilter(_MessageFilter(prefix))


def yes_no(value: bool | int | str, name: str) -> bool:
    """A yes/no setting as an in-process caller may give it (a bool, 0 / 1, or the text ``"true"`` / ``"false"``).

    Args:
        value: the setting.
        name: its name, for the error.

    Returns:
        True for on. The text ``"false"`` is off here, where ``bool("false")`` would be on.

    Raises:
        UserInputError: any other value.
    """
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise UserInputError(f"{name} must be true or false, got {value!r}")


def configure_inference(
    device: str | torch.device = "cpu", num_threads: int | None = None, keep_memory: bool | str = True
) -> dict[str, object]:
    """Settings of an inference process: CPU threads and, on a CPU, the allocator (see the module's docstring).

    Called from the inference config's ``initialize``; the settings are the process's (threads and allocator are
    per process by nature), so call it once, before the network runs.

    Args:
        device: the inference device; the allocator is only changed for ``cpu``.
        num_threads: intra-op threads of PyTorch (None or 0: on a CPU, one per core found idle at start, at least
            one and at most :func:`usable_cores`, :func:`threads_for_free_cores`; where ``OMP_NUM_THREADS`` is set
            (a scheduler's or the user's choice) or elsewhere, PyTorch's count, at most :func:`usable_cores`). ONNX
            Runtime gets the same number (:mod:`scripts.backends`).
        keep_memory: keep freed memory in the process on a CPU (:func:`keep_freed_memory`); ``"true"`` /
            ``"false"`` as typed on the command line are understood.

    Returns:
        What is in effect: ``device``, ``threads``, ``free_cores`` (measured, or None), ``keep_freed_memory``; it
        is also logged.
    """
    device = torch.device(device)
    free, from_env = None, os.environ.get("OMP_NUM_THREADS")
    if num_threads:
        if int(num_threads) < 1:
            raise UserInputError(f"num_threads must be a positive number of threads, got {num_threads}")
        torch.set_num_threads(int(num_threads))
    elif device.type == "cpu" and not from_env:  # else the count PyTorch took from it
        free = free_cores()
        torch.set_num_threads(threads_for_free_cores(free, usable_cores()))
    elif torch.get_num_threads() > usable_cores():  # PyTorch counts the machine's cores, not this process's
        torch.set_num_threads(usable_cores())
    kept = keep_freed_memory() if yes_no(keep_memory, "keep_freed_memory") and device.type == "cpu" else False
    quiet_known_noise()
    settings = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "free_cores": free,
        "keep_freed_memory": kept,
    }
    found = "" if num_threads or not from_env else f" (OMP_NUM_THREADS={from_env})"
    if free is not None:
        found = f" ({free:.1f} of {usable_cores()} cores idle at start)"
    logger.info(f"inference on {device}, {settings['threads']} CPU threads{found}, keep freed memory: {kept}")
    return settings
