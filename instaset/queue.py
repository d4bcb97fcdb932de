"""Durable jobs: the retry policy and the exceptions handlers use to steer it.

The SQL lives in :mod:`instaset.store.jobs`; this module decides *when* a failed job runs
again. Processing is at-least-once: a job may run again after a crash, so every handler is
idempotent (its effects are keyed, or commit together with the job's completion).
"""

from __future__ import annotations

import random
from enum import Enum

from instaset.store.jobs import Job, NewJob, claim, complete, enqueue, enqueue_in, reschedule

__all__ = [
    "COMPLETED",
    "Job",
    "NewJob",
    "PermanentJobError",
    "RetryLater",
    "backoff_delay",
    "claim",
    "complete",
    "enqueue",
    "enqueue_in",
    "reschedule",
]


class Outcome(Enum):
    """What a handler may return: ``COMPLETED`` when it marked its job done itself, inside
    the transaction that committed its effects (saves the worker a write of its own)."""

    COMPLETED = "completed"


COMPLETED = Outcome.COMPLETED


class RetryLater(Exception):
    """Raised by a handler to run the job again after ``delay`` seconds.

    ``count_attempt=False`` defers without spending one of the job's tries (e.g. a send
    waiting for its rate budget: over-budget sends wait, they are never dropped).
    """

    def __init__(self, delay: float, reason: str, *, count_attempt: bool = True) -> None:
        self.delay = max(0.0, delay)
        self.reason = reason
        self.count_attempt = count_attempt
        super().__init__(reason)


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help: the job is dead-lettered at once."""


def backoff_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter: ``min(cap, base**attempts) * U(0.5, 1.0)``.

    ``attempts`` is how many tries have been made (1 after the first failure). The jitter
    spreads retries of jobs that failed together (e.g. after a Meta outage).
    """
    r = rng if rng is not None else random
    try:
        delay = min(cap, base ** max(0, attempts))
    except OverflowError:  # a large max_attempts: the cap was passed long ago
        delay = cap
    return delay * r.uniform(0.5, 1.0)
