"""The walk over Meta's conversation list that a catch-up run makes, as values: a batch's
budgets (:class:`_Batch`), which pass a part belongs to (:class:`_Pass`), and the three
signals that stop a walk early (:class:`_Spent`, :class:`_Staged`, :class:`_Fenced`). See
:mod:`instaset.catchup` for the contracts; the names stay private to the catch-up modules."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from instaset.backfill import MIN_CALLS
from instaset.queue import NewJob

# Passes from the top (see instaset.catchup): at most this many after the walk.
TOP_PASSES = 4


class _Spent(Exception):
    """The batch's call or time budget is used up (internal flow, never escapes)."""


class _Fenced(Exception):
    """The run finished, or a new generation restarted it, while this walk went on: the
    walk stops (the newer generation, or nobody, walks on)."""


class _Staged(Exception):
    """Ingest keeps more events staged than a transaction should move (heavy load): the
    walk stops before the conversation at ``resume`` (its ``after`` cursor, its index)."""

    def __init__(self, resume: tuple[str | None, int] = (None, 0)) -> None:
        super().__init__("ingest is under heavy load (events staged)")
        self.resume = resume


@dataclass(frozen=True, slots=True)
class _Pass:
    """Which pass over the conversation list a part belongs to: ``top`` 0 is the walk down
    to the gap; ``top`` k > 0 is the k-th pass from the top, down to ``floor`` (when the
    previous pass began). ``began``: when this pass began; ``relisted``: this pass has
    listed conversations before, in an earlier part."""

    top: int
    floor: float | None
    began: float
    relisted: bool = False

    @classmethod
    def of(cls, payload: Mapping[str, object], gen: float) -> _Pass:
        top = payload.get("top")
        floor, began = payload.get("floor"), payload.get("began")
        return cls(
            top=int(top) if isinstance(top, int | float) else 0,
            floor=float(floor) if isinstance(floor, int | float) else (gen if top else None),
            began=float(began) if isinstance(began, int | float) else gen,
            relisted=bool(payload.get("relisted", int(str(payload.get("part", 0))) > 0)),
        )

    def payload(self) -> dict[str, object]:
        if not self.top and not self.relisted:
            return {}
        return {"top": self.top, "floor": self.floor, "began": self.began,
                "relisted": self.relisted}

    def going_on(self) -> _Pass:
        """The same pass, continued in a later part (it lists again)."""
        return _Pass(self.top, self.floor, self.began, relisted=True)

    def after(self, listed_more: bool, now: float) -> _Pass | None:
        """The pass that follows this one once it ended: another from the top when this one
        listed conversations more than once (``listed_more``: a second page in its last part)
        and :data:`TOP_PASSES` allows it, else None."""
        if not (self.relisted or listed_more) or self.top >= TOP_PASSES:
            return None
        return _Pass(self.top + 1, self.began, now)


class _Batch:
    """One batch's budgets and where the walk can resume (after the last complete
    conversation)."""

    __slots__ = ("calls", "deadline", "max_calls", "paged", "resume", "timer", "walked")

    def __init__(self, *, max_calls: int | None, seconds: float | None,
                 timer: Callable[[], float], resume: tuple[str | None, int]) -> None:
        self.calls = 0
        self.max_calls = max_calls if max_calls is not None else math.inf
        self.timer = timer
        self.deadline = timer() + seconds if seconds is not None else math.inf
        self.resume = resume
        self.paged = False  # the walk followed a cursor to a next page of conversations
        self.walked = 0  # conversations this batch walked to their end (skipped ones: not)

    def room(self, n: int) -> bool:
        """Whether ``n`` more calls fit (the first MIN_CALLS always fit the time budget)."""
        if self.calls + n > self.max_calls:
            return False
        return self.calls + n <= MIN_CALLS or self.timer() < self.deadline

    def limiter_deadline(self) -> float | None:
        return None if self.calls < MIN_CALLS or self.deadline == math.inf else self.deadline


def part_job(run_id: int, acct: str, gen: float, after: str | None, skip: int,
             part: int, run_at: float, tries: int, walk: _Pass | None = None) -> NewJob:
    # One more attempt than the handler's tries: the worker never dead-letters a batch before
    # the handler has recorded the run's failure.
    return NewJob("catchup_backfill", f"catchup:{run_id}:{gen!r}:{part}", {
        "run_id": run_id, "account_id": acct, "gen": gen, "after": after, "skip": skip,
        "part": part, **(walk.payload() if walk is not None else {})}, run_at=run_at,
        max_attempts=tries + 1)
