"""Comparing two configs' replays of the same history (``workflows replay --config OTHER``).

Contract: :func:`diff` lists every step whose workflow or actions differ between the
current config's :class:`~instaset.replay.Report` and the candidate's, in replay order; a
step one side does not have counts as "nothing" there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instaset.replay import (
    NOTHING,
    Outcome,
    Report,
    Step,
    WorkflowCounts,
    describe_action,
    iso,
)


@dataclass(frozen=True, slots=True)
class Change:
    """An event (or continuation) the two configs decide differently."""

    step: Step  # as replayed with the candidate when it has it, else the current one
    before: Outcome
    after: Outcome

    def describe(self, limit: int = 80) -> str:
        """``would now reply "X" (wf-b) where it replied "Y" (wf-a)``: from the first message
        that differs (the same private reply first, then another public reply, is said as
        the public replies)."""
        before, after = self.before.messages, self.after.messages
        skip = 0
        while (skip < min(len(before), len(after)) - 1 and before[skip] == after[skip]
               and self.before.workflow == self.after.workflow):
            skip += 1
        return (f"would now {_verb(self.after, limit, skip=skip)} where it "
                f"{_verb(self.before, limit, True, skip=skip)}")

    def to_json(self) -> dict[str, Any]:
        s = self.step
        return {
            "key": s.key, "event_id": s.event_id, "kind": s.kind, "at": iso(s.at),
            "account_id": s.account_id, "contact_id": s.contact_id, "username": s.username,
            "text": s.text, "before": self.before.to_json(), "after": self.after.to_json(),
            "description": self.describe(),
        }


def _verb(o: Outcome, limit: int, past: bool = False, skip: int = 0) -> str:
    if o.is_nothing:
        return "did nothing" if past else "do nothing"
    msgs = o.messages[skip:]
    if msgs:
        first = describe_action(msgs[0], limit=limit)
        more = f" (+{len(msgs) - 1} more)" if len(msgs) > 1 else ""
        if past:
            first = first.replace("reply ", "replied ", 1) if first.startswith("reply ") else (
                f"sent {first}")
        elif not first.startswith("reply "):
            first = f"send {first}"
        return f"{first}{more} ({o.workflow})"
    if o.refused:
        why = o.refused[0].split(": refused ", 1)[-1]
        return f"{'was' if past else 'be'} refused: {why} ({o.workflow})"
    acts = "; ".join(describe_action(a, limit=limit) for a in o.actions) or "no actions"
    return f"{'ran' if past else 'run'} {o.workflow}: {acts}"


@dataclass(frozen=True, slots=True)
class ReplayDiff:
    current: Report
    candidate: Report
    changes: tuple[Change, ...]

    def to_json(self) -> dict[str, Any]:
        cur, cand = self.current.counts(), self.candidate.counts()
        names = sorted(set(cur) | set(cand))
        zero = WorkflowCounts()
        return {
            "since": iso(self.current.since) if self.current.since is not None else None,
            "until": iso(self.current.until),
            "events": self.current.events,
            "current": self.current.source,
            "candidate": self.candidate.source,
            "counts": {
                n: {"current": cur.get(n, zero).to_json(),
                    "candidate": cand.get(n, zero).to_json()} for n in names
            },
            "changes": [c.to_json() for c in self.changes],
        }


def diff(current: Report, candidate: Report) -> ReplayDiff:
    """Every step whose workflow or actions differ, in time order (a step missing on one side,
    e.g. a continuation only one config schedules, counts as "nothing" there)."""
    cur = {s.key: s for s in current.steps}
    cand = {s.key: s for s in candidate.steps}
    # Replay order (whole seconds, then position), as the history was read.
    order: dict[str, tuple[int, int, Step]] = {}
    for i, s in enumerate(current.steps):
        order[s.key] = (int(s.at), i, s)
    for i, s in enumerate(candidate.steps):
        if s.key not in order:
            order[s.key] = (int(s.at), len(current.steps) + i, s)
    changes: list[Change] = []
    for key, (_at, _i, s) in sorted(order.items(), key=lambda kv: kv[1][:2]):
        before = cur[key].outcome if key in cur else NOTHING
        after = cand[key].outcome if key in cand else NOTHING
        if not before.same_as(after):
            changes.append(Change(cand.get(key, s), before, after))
    return ReplayDiff(current, candidate, tuple(changes))


__all__ = ["Change", "ReplayDiff", "diff"]
