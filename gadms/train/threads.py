"""How many threads torch computes with: no more than the cores this process may use.

torch sizes its intra-op thread pool when it starts, from the cores it sees then: not from a container's CPU quota
(``docker --cpus``), nor from an affinity set later, nor from the other ranks of a torchrun launch on the node. Too many
threads on too few cores is the slow case: every parallel operation then waits for threads that are not
running. :func:`use_cores` lowers torch's count to the usable cores divided by the processes of this node
(``LOCAL_WORLD_SIZE``) and never raises it: on a machine where torch's own choice already fits, nothing changes
(thread counts change the float rounding of training, so the demo keeps its bytes). ``OMP_NUM_THREADS`` set in
the environment wins (torch reads it at start-up; note that torchrun sets it to 1 when it is unset).
DataLoader workers run single-threaded (:func:`gadms.lifetime.loader_worker_init`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import torch

THREADS_ENV = "OMP_NUM_THREADS"
CGROUP = Path("/sys/fs/cgroup")  # where a container's CPU quota shows

logger = logging.getLogger(__name__)

_announced: dict[int, int] = {}  # pid -> the thread count already announced by this process


def usable_cores() -> int:
    """The CPU cores this process may use: its affinity where the platform has one (else all cores), capped by a
    container's CPU quota (cgroup ``cpu.max`` or ``cpu.cfs_quota_us``), which the affinity does not show."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = quota_cores()
    return max(1, min(cores, quota) if quota else cores)


def quota_cores(cgroup: Path = CGROUP) -> int | None:
    """Whole cores the cgroup CPU quota allows (rounded up), or None without a quota (or where none can be read)."""
    for path, parse in ((cgroup / "cpu.max", _v2_quota), (cgroup / "cpu" / "cpu.cfs_quota_us", _v1_quota)):
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            continue
        return parse(text, path)
    return None


def _v2_quota(text: str, path: Path) -> int | None:
    """cgroup v2 ``cpu.max``: ``QUOTA PERIOD`` or ``max PERIOD``."""
    quota, _, period = text.strip().partition(" ")
    if not quota.isdigit() or not period.strip().isdigit() or not int(period):
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def _v1_quota(text: str, path: Path) -> int | None:
    """cgroup v1 ``cpu.cfs_quota_us`` (-1: no quota) over ``cpu.cfs_period_us`` beside it."""
    try:
        quota, period = int(text.strip()), int(path.with_name("cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def threads_from_env(value: str) -> int:
    """The thread count an ``OMP_NUM_THREADS`` value asks for (its first entry: OpenMP allows ``4,2``).

    Raises:
        ValueError: one line naming the variable, when the value is not a positive whole number.
    """
    first = value.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise ValueError(f"{THREADS_ENV}={value!r}: not a positive whole number of threads; unset it or set e.g. 2")
    return int(first)


def choose_threads() -> tuple[int, str]:
    """The intra-op thread count for this process and why, e.g. ``(2, "2 cores usable by this process")``."""
    if os.environ.get(THREADS_ENV, "").strip():
        threads = threads_from_env(os.environ[THREADS_ENV])
        return threads, f"{THREADS_ENV}={threads} set in the environment"
    cores, processes = usable_cores(), max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    fits = max(1, cores // processes)
    why = f"{cores} core{'s' if cores != 1 else ''} usable by this process"
    why += f", shared by {processes} processes" if processes > 1 else ""
    current = torch.get_num_threads()
    if current <= fits:
        return current, why
    return fits, f"{why}; torch's default was {current}"


def use_cores(announce: bool = True) -> int:
    """Set torch's intra-op thread count (:func:`choose_threads`) and say once per process what was chosen.

    Args:
        announce: print the choice (on the main process; it is logged at INFO either way).

    Returns:
        The thread count in use.
    """
    threads, why = choose_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if _announced.get(os.getpid()) != threads:
        _announced[os.getpid()] = threads
        line = f"torch computes with {threads} thread{'s' if threads != 1 else ''} ({why})"
        logger.info(line)
        if announce:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
    return threads
