"""``when:`` conditions: does a matched workflow fire for this contact right now (pure)."""

from __future__ import annotations

import math
import time
from datetime import datetime

from instaset.engine.model import Conditions, FieldTest, Hours
from instaset.engine.settings import EngineSettings
from instaset.engine.state import LEAD_STAGES, ConversationState

__all__ = ["check_conditions", "fmt_time", "in_hours"]

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def fmt_time(ts: float) -> str:
    """A unix time as ``2024-05-01T12:00:00Z`` for traces: exactly what
    ``datetime.fromtimestamp(ts, UTC).strftime(...)`` gives (rounded to the microsecond, then
    truncated to the second), at half the cost (replay formats one per step)."""
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole += 1
    elif micros < 0:
        whole -= 1
    t = time.gmtime(whole)
    return f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}Z"


def in_hours(hours: Hours, weekday: int, minute: int) -> bool:
    """Whether local ``weekday`` (Monday = 0) and ``minute`` after midnight fall in ``hours``.

    A span whose ``from`` is after its ``to`` crosses midnight and belongs to the day it
    starts on: ``{days: fri, from: "22:00", to: "02:00"}`` covers Friday 22:00 to Saturday
    02:00. Equal ``from`` and ``to`` mean the whole day."""
    start, end = hours.from_, hours.to
    if start == end or (start == 0 and end == 1440):
        return weekday in hours.days
    if start < end:
        return weekday in hours.days and start <= minute < end
    return (weekday in hours.days and minute >= start) or (
        (weekday - 1) % 7 in hours.days and minute < end
    )


def _describe_hours(hours: Hours) -> str:
    days = ",".join(_DAY_NAMES[d] for d in hours.days)
    return f"{days} {_clock(hours.from_)}-{_clock(hours.to)}"


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _field_fails(name: str, test: FieldTest, fields: dict[str, str]) -> str | None:
    value = fields.get(name) or None
    if test.exists is True and value is None:
        return f"field {name} is not set"
    if test.exists is False and value is not None:
        return f"field {name} is already set"
    if test.equals is not None and (value or "").casefold() != test.equals.casefold():
        return f"field {name} is not {test.equals!r}"
    if test.one_of is not None and (value or "").casefold() not in {
        v.casefold() for v in test.one_of
    }:
        return f"field {name} is not one of {list(test.one_of)}"
    return None


def check_conditions(
    workflow_name: str,
    cond: Conditions,
    state: ConversationState,
    settings: EngineSettings,
    now: float,
) -> str | None:
    """``None`` when every condition holds, else the first failing one, in words.

    ``state`` is the state *after* the event's bookkeeping (so an inbound DM has already
    opened the window). ``follower`` conditions fail while ``state.follower`` is unknown."""
    tags = state.tags
    if cond.tags_any and not tags.intersection(cond.tags_any):
        return f"has none of the tags {list(cond.tags_any)}"
    missing = [t for t in cond.tags_all if t not in tags]
    if missing:
        return f"missing tags {missing}"
    present = [t for t in cond.tags_none if t in tags]
    if present:
        return f"has excluded tags {present}"
    if cond.fields:
        fields = state.fields.as_dict()
        for name, test in cond.fields.items():
            failure = _field_fails(name, test, fields)
            if failure:
                return failure
    if cond.stage:
        # The lead stage scoring stored (it ranks only the known stages), and a stage of
        # the creator's own that a step set (scoring cannot rank it, so it keeps none).
        stages = [state.lead_stage or state.stage]
        if state.stage not in LEAD_STAGES and state.stage not in stages:
            stages.append(state.stage)
        if not any(s in cond.stage for s in stages):
            shown = " and ".join(repr(s) for s in stages)
            return f"stage is {shown}, not one of {list(cond.stage)}"
    if cond.window_open is not None:
        is_open = state.window_open(now, settings.window_seconds)
        if is_open != cond.window_open:
            return "24 h window is " + ("open" if is_open else "closed")
    if cond.hours is not None or cond.quiet_hours is not None:
        local = datetime.fromtimestamp(now, settings.zone)
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        if cond.hours is not None and not in_hours(cond.hours, weekday, minute):
            stamp = local.strftime("%a %H:%M") + f" {settings.timezone}"
            return f"outside hours ({_describe_hours(cond.hours)}; now {stamp})"
        if cond.quiet_hours is not None and in_hours(cond.quiet_hours, weekday, minute):
            stamp = local.strftime("%a %H:%M") + f" {settings.timezone}"
            return f"quiet hours ({_describe_hours(cond.quiet_hours)}; now {stamp})"
    if cond.follower is not None:
        if state.follower is None:
            return "follower status unknown"
        if state.follower != cond.follower:
            return "is a follower" if state.follower else "is not a follower"
    if cond.cooldown is not None:
        last = state.fired.get(workflow_name)
        if last is not None and now < last + cond.cooldown:
            return f"cooldown until {fmt_time(last + cond.cooldown)}"
    return None
