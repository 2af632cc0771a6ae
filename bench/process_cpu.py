"""CPU time of processes and of the whole machine, read from Linux's /proc, for the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads). OSError off Linux."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of every core since boot. OSError off Linux."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return sum(ticks) - idle, sum(ticks)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of process `pid`, of its live children and of those it reaped (PostgreSQL's
    backends come and go under the postmaster: a reaped one's time moves into the
    postmaster's `cutime`/`cstime`, so the sum never goes back). OSError off Linux."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own_and_reaped = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    total = own_and_reaped
    for child in children_of(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            continue  # ended since it was listed: its time is in the parent's reaped share
    return total


def children_of(pid: int) -> list[int]:
    """The child processes of `pid`."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return children
