"""Timing on a quiet machine: with 2 cores, PyTorch's OpenMP threads collapse (up to 10x) when any other process
uses a core, so the benchmarks refuse to start while others run and drop every block during which they did.
The load of other processes is read from /proc/stat (every process's busy ticks) against this process's own."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

TICK = os.sysconf("SC_CLK_TCK")


def busy_ticks() -> int:
    """CPU ticks spent busy by every process, from /proc/stat."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def own_ticks() -> int:
    stat = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return int(stat[11]) + int(stat[12])  # utime + stime of this process (all its threads)


def other_load(seconds: float = 1.0) -> float:
    """Cores used by other processes over ``seconds``."""
    b0, o0 = busy_ticks(), own_ticks()
    time.sleep(seconds)
    return ((busy_ticks() - b0) - (own_ticks() - o0)) / TICK / seconds


def refuse_if_busy(limit: float) -> float | None:
    """The other processes' load, or None (after saying why on stderr) when it is above ``limit`` cores."""
    load = other_load(2.0)
    if load > limit:
        print(f"refusing to time: other processes use {load:.2f} cores (limit {limit}); wait for them", file=sys.stderr)
        return None
    return load


class Block:
    """Times ``steps`` calls of a step function and says how many cores others used meanwhile."""

    def __init__(self, step: Callable[[], object], steps: int):
        self.step, self.steps = step, steps

    def run(self) -> tuple[float, float]:
        """-> (calls per second, cores used by other processes)."""
        b0, o0, t0 = busy_ticks(), own_ticks(), time.perf_counter()
        for _ in range(self.steps):
            self.step()
        wall = time.perf_counter() - t0
        others = ((busy_ticks() - b0) - (own_ticks() - o0)) / TICK / wall
        return self.steps / wall, others
