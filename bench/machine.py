"""How fast this machine runs Python right now, printed beside every benchmark's figures.

The project's VM drifts: the same code measured up to twice as slow within the hour
(bench/README.md). A fixed pure-Python loop, timed just before the run, catches one kind
of slow period (lower is faster; 0.15 s on this 2-core VM, 2026-11-30). Not every kind: at
05:39 it read 0.15 s while the daemon spent a third more CPU per DM than at 05:05, so a
close probe is necessary for comparing two figures, not sufficient: interleave A/B runs.
"""

from __future__ import annotations

import time

PROBE_ITERATIONS = 10_000_000


def python_loop_seconds() -> float:
    """Seconds for ``PROBE_ITERATIONS`` iterations of an empty loop (best of two)."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for _ in range(PROBE_ITERATIONS):
            pass
        best = min(best, time.perf_counter() - started)
    return best


def describe() -> str:
    return f"machine speed: 10M-iteration Python loop {python_loop_seconds():.2f} s"
