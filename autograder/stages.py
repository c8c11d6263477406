"""Where a command's time goes, stage by stage: ``autograder grade --timings`` and the benchmark.

Each process sums the wall time of its stages (``with stage("gradebook rows"): ...``); a
grading process sends what it summed with each report (:func:`take`), and the parent adds it
to its own under "graders".  Costs two clock reads per stage, so it is always on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

Totals = dict[str, list[float]]  # stage -> [seconds, times entered]

_totals: Totals = {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - started)


def add(name: str, seconds: float, count: int = 1) -> None:
    entry = _totals.get(name)
    if entry is None:
        _totals[name] = [seconds, float(count)]
    else:
        entry[0] += seconds
        entry[1] += count


def take() -> Totals:
    """What this process summed since the last call (and start again from zero)."""
    global _totals
    taken, _totals = _totals, {}
    return taken


def merge(into: Totals, other: Totals) -> None:
    for name, (seconds, count) in other.items():
        entry = into.setdefault(name, [0.0, 0.0])
        entry[0] += seconds
        entry[1] += count


def since_process_start() -> float | None:
    """Seconds since this process started (its interpreter start-up and imports included)."""
    try:
        with open("/proc/self/stat") as handle:
            started_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def table(parent: Totals, graders: Totals, *, notebooks: int, wall: float, jobs: int) -> str:
    """The breakdown as text: each stage's seconds, share of the wall time, and ms per notebook.

    The parent's stages add up to (at most) its wall time; the graders' are summed over the
    ``jobs`` processes, so they add up to at most ``jobs`` times the wall time."""
    per = max(notebooks, 1)
    lines = [f"where the time went ({notebooks} notebooks, {wall:.2f} s wall, {jobs} grading processes)",
             f"  {'stage':<44}{'seconds':>9}{'ms/notebook':>13}"]

    def rows(title: str, totals: Totals) -> None:
        lines.append(f"  {title}")
        for name, (seconds, _count) in sorted(totals.items(), key=lambda item: -item[1][0]):
            lines.append(f"    {name:<42}{seconds:>9.2f}{1000 * seconds / per:>13.1f}")

    rows("this process (one core):", parent)
    if graders:
        rows(f"grading processes (summed over {jobs}; {jobs * wall:.2f} s of wall time in all):", graders)
    return "\n".join(lines)
