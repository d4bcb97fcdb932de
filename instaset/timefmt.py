"""How times are written for people and for JSON (stdlib only: the CLI imports it at start).

- :func:`iso_utc`: ISO 8601 UTC with a ``Z``, the time format of every JSON document.
- :func:`iso_or_none`: the same, None staying None.
- :func:`iso_seconds`: the same to whole seconds, or None for None.
- :func:`human_duration`: ``"45s"``, ``"12m"``, ``"3h 20m"``, ``"2d 4h"``, for table columns.
- :func:`parse_duration` / :func:`format_duration`: the durations of config.yaml and of
  options such as ``--since 30d`` (here, not with the config models, so that a command can
  read one without importing pydantic).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

_FIRST_TS, _LAST_TS = 0.0, 253_402_300_799.0  # 1970-01-01Z .. 9999-12-31T23:59:59Z


def utc(ts: float) -> datetime:
    """The UTC datetime of a unix time, clamped to 1970..9999: a stored time out of that
    range (older data, a bad value from outside) prints at the edge instead of raising."""
    if not _FIRST_TS <= ts <= _LAST_TS:  # NaN fails both comparisons too
        ts = _LAST_TS if ts > _FIRST_TS else _FIRST_TS
    return datetime.fromtimestamp(ts, UTC)


def iso_utc(ts: float) -> str:
    return utc(ts).isoformat().replace("+00:00", "Z")


def iso_or_none(ts: float | None) -> str | None:
    """:func:`iso_utc`, None staying None (optional times in JSON)."""
    return None if ts is None else iso_utc(ts)


def iso_seconds(ts: float | None) -> str | None:
    """``2026-11-29T17:05:00Z`` (whole seconds, as the leads and bookings listings show);
    None stays None."""
    return None if ts is None else utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.ASCII)
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*[wdhmsWDHS]\s*)+$|^\s*\d+(\.\d+)?\s*$"
_DURATION_HINT = "use a number of seconds or a string like '30s', '15m', '12h', '7d', '2w'"


MAX_DURATION = timedelta(days=36500)
"""The longest duration accepted (100 years): longer ones are typos, and would overflow
:class:`timedelta` or the dates computed from them (``now - 99999999d``)."""
_MAX_TEXT = "100 years (36500d)"


def parse_duration(value: object) -> timedelta:
    """``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"``, compounds like ``"1h30m"``, or a
    number of seconds (int, float or numeric string) -> :class:`timedelta`. Negative, NaN,
    boolean values and durations over :data:`MAX_DURATION` are refused with
    :class:`ValueError` (whose message starts with ``invalid duration``)."""
    seconds: float
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):  # bool is an int; `pause_for: yes` is a mistake, not 1 s
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    elif isinstance(value, int):
        # float() of a huge int raises OverflowError: compare as ints first
        seconds = float(value) if abs(value) <= 1 << 62 else (math.inf if value > 0 else -math.inf)
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        if re.search(r"\d\s*M", value):
            # "6M" reads as six months to many people; lowercased it was six minutes, and
            # `purge --older-than 6M` deleted all but the last six minutes.
            raise ValueError(f"invalid duration {value!r}: 'M' could mean months or minutes; "
                             "write minutes as 'm' (15m), months as days (180d)")
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text, re.ASCII):
            seconds = float(text)  # a huge digit string gives inf, refused below
        elif text and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[wdhms])+\s*", text, re.ASCII):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    else:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative time")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {value!r}: longer than {_MAX_TEXT}, the most "
                         "allowed")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling in one unit: 12 h -> ``"12h"``, 90 min -> ``"90m"``."""
    micros = value // timedelta(microseconds=1)
    if micros % 1_000_000:
        return f"{micros / 1_000_000:g}s"
    seconds = micros // 1_000_000
    for unit, size in _UNIT_SECONDS.items():
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return "0s"
