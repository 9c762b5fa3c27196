"""How many threads llama.cpp gets by default: the physical cores this process may run on."""

from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.cache
def cpu_count() -> int:
    """Physical cores this process may use (llama.cpp gains nothing from hyper-threads).

    Read once: ``status`` shows it, and the sysfs reads were a third of its time."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))
