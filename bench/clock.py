"""Deadline-based timing: every loop and learner runs for a fixed wall time, then its steps are
counted, so the benchmark takes the time its settings plan whatever the speed of the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def count_until(
    seconds: float, work: Callable[[], object], sync: Callable[[], None] = lambda: None, clock=time.perf_counter
) -> tuple[int, float]:
    """Call `work()` until `seconds` have passed; returns (calls, seconds taken).

    The clock is read after `sync()` (on CUDA: wait for the queued work, so that it is counted), in
    chunks of calls: they grow from 1 so that waiting costs little, and none is planned past about
    half the time left at the rate so far, so the run ends within about one call of its deadline.
    """
    calls, chunk, start = 0, 1, clock()
    while True:
        for _ in range(chunk):
            work()
        sync()
        calls += chunk
        elapsed = clock() - start
        left = seconds - elapsed
        if left <= 0:
            return calls, elapsed
        chunk = max(1, min(2 * chunk, int(calls / elapsed * left / 2) if elapsed > 0 else 2 * chunk))


class Window:
    """The timed window of a loop that runs until told to stop, from its step counts.

    `tick(steps, ready)` after every step: the warm-up starts at the first ready tick (the loop's first
    update done, so a compile or a graph capture is behind it), the window opens `warmup` seconds
    later and closes `seconds` after that; `tick` returns True once it has closed.
    """

    def __init__(self, warmup: float, seconds: float, clock=time.perf_counter):
        self.warmup, self.seconds, self.clock = warmup, seconds, clock
        self.ready_at: float | None = None
        self.opened: tuple[float, int] | None = None  # (time, steps) when the window opened
        self.last: tuple[float, int] | None = None  # the latest tick in the window

    def tick(self, steps: int, ready: bool = True) -> bool:
        now = self.clock()
        if self.ready_at is None:
            if ready:
                self.ready_at = now
            else:
                return False
        if self.opened is None:
            if now - self.ready_at >= self.warmup:
                self.opened = (now, steps)
            return False
        self.last = (now, steps)
        return now - self.opened[0] >= self.seconds

    def rate(self) -> float:
        """Steps per second within the window (up to the last tick, if the loop ended early)."""
        if self.opened is None or self.last is None or self.last[0] <= self.opened[0]:
            raise RuntimeError("the loop ended before its timed window: give it a longer game (replay_transitions)")
        return (self.last[1] - self.opened[1]) / (self.last[0] - self.opened[0])


def seconds_since_process_start() -> float:
    """Seconds this process has run, imports included (Linux: /proc); 0 where that cannot be read."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        seconds = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return seconds if 0 <= seconds < 3_600 else 0.0
