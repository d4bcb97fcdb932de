"""How times are written for people and for JSON (stdlib only: the CLI imports it at start).

- :func:`iso_utc`: ISO 8601 UTC with a ``Z``, the time format of every JSON document.
- :func:`iso_seconds`: the same to whole seconds, or None for None.
- :func:`human_duration`: ``"45s"``, ``"12m"``, ``"3h 20m"``, ``"2d 4h"``, for table columns.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def iso_seconds(ts: float | None) -> str | None:
    """``2026-11-29T17:05:00Z`` (whole seconds, as the leads and bookings listings show);
    None stays None."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
