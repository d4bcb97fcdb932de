"""Recovering what Meta did not deliver: the Conversations API call limiter, Meta's message
answers turned into the webhook envelopes they would have been, and the creator's summary.
Used by :mod:`instaset.catchup`; no database access here.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from instaset.events import MessageEvent, parse_webhook
from instaset.store.contacts import RecoveredRow

WHY = {
    "first": "before its first check",
    "start": "while instaset was stopped",
    "downtime": "while instaset was down",
    "quiet": "after hours without any webhook",
    "resubscribed": "while its webhook subscription was missing",
    "manual": "in a catch-up run by hand",
}


class CallLimiter:
    """At most ``per_second`` calls per second per key (a sliding log, like
    :class:`instaset.ratelimit.Budgets`), with a margin so that Meta's clock agrees."""

    def __init__(
        self, per_second: float, *, margin: float = 1.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second >= 1:
            self.limit, window = int(per_second), 1.0
        else:
            self.limit, window = 1, 1.0 / per_second
        self.window = window * margin
        self.clock = clock
        self._log: dict[str, collections.deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def acquire(self, key: str) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            log_ = self._log.setdefault(key, collections.deque())
            while True:
                now = self.clock()
                while log_ and log_[0] <= now - self.window:
                    log_.popleft()
                if len(log_) < self.limit:
                    log_.append(now)
                    return
                await asyncio.sleep(log_[0] + self.window - now)


# -- Meta's answers -> webhook-shaped events -----------------------------------------------------
def parse_time(value: object) -> float | None:
    """Graph's ``2026-04-05T05:27:08+0000`` (or any ISO 8601) -> unix seconds (UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _attachments(raw: object) -> list[dict[str, object]]:
    """Conversations API attachments (``{"data": [...]}``) as webhook attachments."""
    data = raw.get("data") if isinstance(raw, Mapping) else raw
    out: list[dict[str, object]] = []
    for a in data if isinstance(data, list) else []:
        if not isinstance(a, Mapping):
            continue
        if "type" in a and "payload" in a:  # already webhook-shaped
            out.append(dict(a))
            continue
        for key, kind in (("image_data", "image"), ("video_data", "video"),
                          ("audio_data", "audio")):
            media = a.get(key)
            if isinstance(media, Mapping):
                out.append({"type": kind, "payload": {"url": media.get("url")}})
                break
        else:
            url = a.get("file_url") or a.get("url")
            out.append({"type": "file" if url else "unknown", "payload": {"url": url}})
    return out


def _id_of(value: object) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def recovered_row(
    account_id: str, detail: Mapping[str, object], usernames: Mapping[str, str | None],
    *, fallback_at: float,
) -> RecoveredRow | None:
    """The single-item webhook envelope Meta would have delivered for ``detail`` (a
    ``GET /{message-id}`` answer), parsed by the same code as a webhook; None when the
    answer does not describe a message."""
    mid = _id_of(detail.get("id"))
    sender = _id_of(detail.get("from"))
    to = detail.get("to")
    to_list = to.get("data") if isinstance(to, Mapping) else None
    receiver = _id_of(to_list[0]) if isinstance(to_list, list) and to_list else None
    if mid is None or sender is None:
        return None
    is_echo = sender == account_id
    contact = receiver if is_echo else sender
    if contact is None:
        return None
    at = parse_time(detail.get("created_time")) or fallback_at
    ts_ms = int(at * 1000)
    message: dict[str, object] = {"mid": mid}
    text = detail.get("message")
    if isinstance(text, str) and text:
        message["text"] = text
    atts = _attachments(detail.get("attachments"))
    if atts:
        message["attachments"] = atts
    if detail.get("is_unsupported") is True:
        message["is_unsupported"] = True
    if is_echo:
        message["is_echo"] = True
    item = {
        "sender": {"id": sender}, "recipient": {"id": account_id if not is_echo else contact},
        "timestamp": ts_ms, "message": message,
    }
    envelope = {"object": "instagram",
                "entry": [{"id": account_id, "time": ts_ms, "messaging": [item]}]}
    events = parse_webhook(envelope)
    if len(events) != 1 or not isinstance(events[0], MessageEvent):
        return None
    ev = events[0]
    return RecoveredRow(ev.dedupe_key, ev.account_id, str(ev.kind), ev.contact_id,
                              ev.occurred_at, ev.raw, mid, usernames.get(contact))


def participants(conv: Mapping[str, object]) -> dict[str, str | None]:
    parts = conv.get("participants")
    data = parts.get("data") if isinstance(parts, Mapping) else None
    out: dict[str, str | None] = {}
    for p in data if isinstance(data, list) else []:
        pid = _id_of(p)
        if pid is not None and isinstance(p, Mapping):
            name = p.get("username")
            out[pid] = name if isinstance(name, str) and name else None
    return out


def summary_text(
    account: str, reason: str, recovered: int, per_contact: Sequence[tuple[str, int]],
    unavailable: int, error: str | None,
) -> str | None:
    """What the creator is told at the end of a run; None when there is nothing to say."""
    parts: list[str] = []
    who = account if account.isdigit() else f"@{account}"
    why = WHY.get(reason.split("+")[0], "")
    if recovered:
        people = ", ".join(
            f"{name if str(name).isdigit() else '@' + str(name)} ({n})"
            for name, n in per_contact[:10]
        )
        more = f" and {len(per_contact) - 10} more" if len(per_contact) > 10 else ""
        parts.append(
            f"Recovered {recovered} message{'s' if recovered != 1 else ''} to {who} that "
            f"arrived {why}: from {people}{more}. They went through your workflows like new "
            "ones; replies only go out inside the 24 h window."
        )
    if unavailable:
        parts.append(
            f"{unavailable} missed message{'s' if unavailable != 1 else ''} to {who} could "
            "not be read back (Instagram only details the 20 newest of a conversation); "
            "see the Instagram app."
        )
    if error:
        parts.append(f"Catching up on {who} stopped: {error}.")
    return " ".join(parts) or None
