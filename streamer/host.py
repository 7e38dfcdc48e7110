"""This machine's CPU side: the cores this process may run on, and when it started (GPUs: ``cuda_env``)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def process_start_mono() -> float | None:
    """When this process started, on the ``time.monotonic()`` clock (Linux: from /proc/self/stat, to the
    kernel's clock tick), or None where that cannot be read. Start-up times are measured from it."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime: ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_s
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.monotonic() - age if age >= 0 else None
