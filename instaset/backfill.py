"""Recovering what Meta did not deliver, the pure parts: the catch-up settings and gap
detection, the Conversations API call limiter, Meta's message answers turned into the webhook
envelopes they would have been, and the creator's summary. Used by :mod:`instaset.catchup`
(which re-exports the settings and gap names); no database access here.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
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
    "retry": "while an earlier catch-up failed",
}


class CallLimiter:
    """At most ``per_second`` calls per second per key (a sliding log, like
    :class:`instaset.ratelimit.Budgets`), with a margin so that Meta's clock agrees.

    ``clock`` and ``sleep`` go together: a test gives a fake clock and a sleep that moves it.
    """

    def __init__(
        self, per_second: float, *, margin: float = 1.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_second >= 1:
            self.limit, window = int(per_second), 1.0
        else:
            self.limit, window = 1, 1.0 / per_second
        self.window = window * margin
        self.clock = clock
        self.sleep = sleep
        self._log: dict[str, collections.deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def acquire(self, key: str, *, deadline: float | None = None) -> bool:
        """Take a slot, waiting for one if needed. With ``deadline`` (on ``clock``), returns
        False at once, without taking a slot, when none is free by then."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            log_ = self._log.setdefault(key, collections.deque())
            while True:
                now = self.clock()
                while log_ and log_[0] <= now - self.window:
                    log_.popleft()
                if len(log_) < self.limit:
                    log_.append(now)
                    return True
                free_at = log_[0] + self.window
                if deadline is not None and free_at > deadline:
                    return False
                await self.sleep(free_at - now)


# -- gap detection (pure) -----------------------------------------------------------------------
# Calls a batch always makes, whatever its time budget: a page of conversations, one
# conversation's message list and one message. Without them a slow rate could make every
# batch end before its first recovery, and the chain would never end.
MIN_CALLS = 3
# Gap reasons that restart an unfinished run: messages may have been missed after its walk
# passed the newest conversations. "quiet" and "retry" do not (see the module docstring).
RESTARTING = frozenset({"first", "start", "downtime", "resubscribed", "manual"})


@dataclass(frozen=True, slots=True)
class CatchUpSettings:
    interval: float = 300.0  # periodic check
    quiet_seconds: float = 6 * 3600.0  # no event that long while connected: look
    overlap: float = 120.0  # a backfill starts this much before the gap
    max_lookback: float = 7 * 86400.0
    calls_per_second: float = 2.0  # Conversations API, per account
    max_calls_per_job: int = 60  # ~30 s at 2/s, well inside the worker's job timeout
    # A batch's time budget. With one call's Graph timeout (20 s) on top it stays well inside
    # the worker's job timeout (0.75 x the 120 s lease), so the worker never cancels a batch.
    batch_seconds: float = 25.0
    detail_limit: int = 20  # Meta details only the 20 newest messages of a conversation
    max_tries: int = 5  # tries of one batch (timeouts, transport errors, 5xx, throttling)
    retry_base: float = 2.0  # backoff between them: base**tries, jittered, capped
    retry_cap: float = 300.0
    failed_cool_down: float = 3600.0  # after a failed run; doubles with each further failure
    failed_cool_down_cap: float = 86400.0

    @property
    def calls_per_job(self) -> int:
        """Calls one backfill job makes: at most ~30 s of the rate, so that a slow configured
        rate never runs into the worker's job timeout."""
        return max(MIN_CALLS, min(self.max_calls_per_job, int(self.calls_per_second * 30)))

    @property
    def down_after(self) -> float:
        """A check this long after the previous one means the daemon was not running."""
        return 2 * self.interval + 60.0

    def cool_down(self, failures: int) -> float:
        """How long after the latest of ``failures`` consecutive failed runs the next
        automatic try waits."""
        return min(self.failed_cool_down_cap,
                   self.failed_cool_down * float(2 ** max(0, min(failures - 1, 30))))


@dataclass(frozen=True, slots=True)
class Marks:
    """What the previous checks of an account recorded (``catchup_accounts``)."""

    checked_at: float
    subscribed_at: float | None = None
    backfilled_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row | None) -> Marks | None:
        if row is None:
            return None
        return cls(row["checked_at"], row["subscribed_at"], row["backfilled_at"])


@dataclass(frozen=True, slots=True)
class Failures:
    """The failed runs of an account since its last successful one."""

    count: int
    since: float  # the earliest period they left uncovered
    last_at: float  # when the latest one ended

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Failures | None:
        if not row["n"]:
            return None
        return cls(int(row["n"]), float(row["since"]), float(row["last_at"]))


@dataclass(frozen=True, slots=True)
class Gap:
    reason: str  # one of WHY's keys, or several joined by "+"
    since: float


def detect_gap(
    *, now: float, created_at: float, marks: Marks | None, last_event_at: float | None,
    first_in_process: bool, resubscribed: bool, settings: CatchUpSettings,
    failures: Failures | None = None,
) -> Gap | None:
    """The period to backfill, or None. See the module docstring for the triggers; ``since``
    is the earliest of them minus the overlap (and covers what failed runs left), never
    before the account was connected nor more than ``max_lookback`` ago. While failed runs
    cool down, neither "quiet" nor "retry" is a gap."""
    found: list[tuple[str, float]] = []
    cooling = failures is not None and now < failures.last_at + settings.cool_down(
        failures.count)
    if marks is None:
        found.append(("first", created_at))
    else:
        if first_in_process:
            found.append(("start", marks.checked_at))
        elif now - marks.checked_at > settings.down_after:
            found.append(("downtime", marks.checked_at))
        if resubscribed:
            found.append(("resubscribed", marks.subscribed_at or marks.checked_at))
        seen = max(t for t in (last_event_at, marks.backfilled_at, created_at) if t is not None)
        if now - seen > settings.quiet_seconds and not cooling:
            found.append(("quiet", seen))
    if failures is not None and not cooling:
        found.append(("retry", failures.since))
    if not found:
        return None
    since = min(t for _, t in found) - settings.overlap
    if failures is not None:  # a run now also covers what the failed ones did not
        since = min(since, failures.since)
    return Gap("+".join(r for r, _ in found),
               max(since, created_at, now - settings.max_lookback))


def merge_reasons(*reasons: str) -> str:
    """``start`` + ``start+resubscribed`` -> ``start+resubscribed`` (first seen first)."""
    out: list[str] = []
    for reason in reasons:
        out += [r for r in reason.split("+") if r and r not in out]
    return "+".join(out)


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


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration back from now (``6h``, ``2d``) or a UTC time
    (``2026-11-28T10:00``)."""
    from instaset.engine.values import parse_duration
    from instaset.errors import InstasetError

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    at = parse_time(text.strip())
    if at is None:
        raise InstasetError(
            f"--since {text!r} is neither a duration (6h, 2d) nor a time (2026-11-28T10:00)"
        )
    if at > now:
        raise InstasetError(f"--since {text!r} is in the future")
    return at


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
        parts.append(f"Catching up on {who} failed: {error}. instaset tries again later "
                     "(`instaset catch-up` tries now; `instaset doctor` shows the state).")
    return " ".join(parts) or None
