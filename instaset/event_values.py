"""Scalar values of Meta's webhook payloads: times, ids, and the canonical JSON and digests
that event keys and raws are made of.

Contracts: nothing here raises for decoded JSON input; a value that cannot be used gives
None (or 0 for an edit count). Ids are strings (ints stringified, floats never: a 17-digit
id as a float has lost digits). Times are UTC unix seconds (:func:`normalise_timestamp`).
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

JSONObject = dict[str, Any]

_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z; beyond that a value is garbage
_MS_THRESHOLD = 1e12  # 1e12 s is year 33658, so anything larger must be milliseconds
EARLIEST_EVENT = 1_262_304_000.0  # 2010-01-01Z: Instagram did not exist before
MAX_AHEAD = 86_400.0  # how far ahead of its arrival an event's time may be (clock skew)
_NUMBER = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")
_NUM_EDIT = re.compile(r"[0-9]{1,18}")
_MAX_ID_INT = 10**40  # str() of huge ints raises; no real id is near this


def normalise_timestamp(value: object) -> float | None:
    """Meta time value -> UTC unix seconds, or None if unusable.

    Numbers (and digit strings) above 1e12 are milliseconds, others seconds; ISO 8601
    strings (Chatwoot fixtures) are accepted, naive ones taken as UTC. Booleans, non-positive,
    non-finite and post-9999 values are unusable."""
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int):
        if value <= 0 or value > _MAX_SECONDS * 1000:
            return None
        number = float(value)
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            number = float(text)
        else:
            return _parse_iso(text)
    else:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    if number > _MS_THRESHOLD:
        number /= 1000.0
    return number if number <= _MAX_SECONDS else None


def _parse_iso(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return seconds if 0 < seconds <= _MAX_SECONDS else None


def plausible_time(occurred: float | None, received: float) -> float:
    """An event's time as used everywhere after ingest: Meta's when it is plausible (from
    2010 to a day after the event arrived), else the arrival time. A time far ahead would
    keep a message out of retention's reach and a 24 h window open; one before 2010 is
    garbage (a missing value reads as 0)."""
    if occurred is None or not EARLIEST_EVENT <= occurred <= received + MAX_AHEAD:
        return received
    return occurred


def as_id(value: object) -> str | None:
    """An id as a string: non-empty strings verbatim, ints stringified. Floats are never ids
    (a 17-digit id as a float has already lost digits), and neither is text with a lone
    surrogate escape (no database column can hold it: the id is taken as missing)."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return None
        return value or None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _MAX_ID_INT:
        return str(value)
    return None


def as_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_object(value: object) -> JSONObject | None:
    return value if isinstance(value, dict) else None


def id_of(value: object) -> str | None:
    """``{"id": ...}`` -> the id (sender, recipient, from, media)."""
    obj = as_object(value)
    return as_id(obj.get("id")) if obj is not None else None


def canon(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def digest(*parts: object) -> str:
    # surrogatepass: JSON may carry lone "\udXXX" escapes, which plain UTF-8 cannot encode.
    data = canon(list(parts)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


def num_edit(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 10**18 else 0
    if isinstance(value, str) and _NUM_EDIT.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, float) and value.is_integer() and 0 <= value < 1e18:
        return int(value)
    return 0


# What a message (or an edit of one) holds of the sender's own content, besides its text.
_CONTENT_KEYS = ("message", "message_edit")


def redacted_raw(raw: str) -> str:
    """A stored one-item envelope (``events.raw``) of a message or message edit without the
    sender's content: the ``text`` goes, attachments keep only their ``type`` (their URLs
    and titles go), and a story reply loses the story's URL. Everything that makes the
    event what it is stays (ids, times, the mid, ``num_edit``), so it parses to the same
    kind of event with the same key. Returned canonical (:func:`canon`); ``raw`` as it is
    when it holds no such content, or is no JSON object."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw
    changed = False
    entries = payload.get("entry") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        for items in entry.values() if isinstance(entry, dict) else ():
            for item in items if isinstance(items, list) else ():
                for key in _CONTENT_KEYS:
                    body = item.get(key) if isinstance(item, dict) else None
                    if isinstance(body, dict):
                        changed |= _redact(body)
    return canon(payload) if changed else raw


def _redact(body: JSONObject) -> bool:
    changed = body.pop("text", None) is not None
    atts = body.get("attachments")
    if isinstance(atts, dict):
        atts = [atts]
    if isinstance(atts, list) and atts:
        body["attachments"] = [{"type": a.get("type")} for a in atts if isinstance(a, dict)]
        changed = True
    reply_to = as_object(body.get("reply_to"))
    story = as_object(reply_to.get("story")) if reply_to is not None else None
    if story is not None and story.pop("url", None) is not None:
        changed = True
    return changed
