"""What ingest stores of a webhook body, read on the event loop before the 200.

:func:`event_heads` gives the events of :func:`~instaset.events.parse_webhook` as plain
:class:`~instaset.events.Event` objects (kind, account, dedupe key, time, contact, standby,
raw), at a fraction of the cost; :func:`one_item_body` says when the body's own text can
stand as its only event's ``raw`` (Meta's usual delivery of a DM), so it is stored as it
came instead of re-serialised. Meta's usual delivery, one message in one entry, is read
without the general walk (:func:`_dm_head`). Pure: no I/O.
"""

from __future__ import annotations

import codecs

from instaset.event_values import as_id, id_of, normalise_timestamp
from instaset.events import ENTRY_META, Event, EventKind, heads_walk


def event_heads(payload: object, *, body: str | None = None) -> list[Event]:
    """What ingest stores of each event of a webhook body: ``parse_webhook(payload)`` with
    every event as a plain :class:`Event` (kind, account, dedupe key, time, contact, standby,
    raw; equal to the parsed events' own), without building the kind-specific fields
    (attachments, referrals, ...) that only the worker needs. Raises like parse_webhook.

    ``body``: the body's own text, from :func:`one_item_body` (so the body holds exactly
    one item). That event's ``raw`` is then ``body`` rather than a re-serialisation, which
    :func:`~instaset.events.parse_stored` parses to the same event (a fifth of the cost of
    a DM's heads), when its kind is in :data:`~instaset.events.VERBATIM_KINDS`; other
    kinds keep the canonical raw."""
    if body is not None:
        head = _dm_head(payload, body)
        if head is not None:
            return [head]
    return heads_walk(payload, body)


def _dm_head(payload: object, body: str) -> Event | None:
    """The head of Meta's usual delivery, one message (or echo) item that
    :func:`one_item_body` accepted: what the general walk gives, without its machinery
    (ingest's largest own cost per DM). None for anything else: the walk decides. The same
    helpers decide each attribute as in the walk (``instaset.events._message``);
    tests compare the two on every fixture and on generated bodies."""
    entries = payload.get("entry") if isinstance(payload, dict) else None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        return None
    entry = entries[0]
    if len(entry) - ("id" in entry) - ("time" in entry) != 1:
        return None  # what the walk reads is not one list (one_item_body's callers: never)
    key, items = "", None
    for key, items in entry.items():  # noqa: B007 (used after the break: the first list)
        if key not in ENTRY_META:
            break
    if key not in ("messaging", "standby") or not isinstance(items, list) or len(items) != 1:
        return None
    obj = items[0]
    msg = obj.get("message") if isinstance(obj, dict) else None
    if not isinstance(msg, dict) or msg.get("is_deleted") is True:
        return None
    mid = as_id(msg.get("mid"))
    if mid is None:
        return None
    is_echo = msg.get("is_echo") is True
    occurred = normalise_timestamp(obj.get("timestamp"))
    if occurred is None:
        occurred = normalise_timestamp(entry.get("time"))
    return Event(
        kind=EventKind.ECHO if is_echo else EventKind.MESSAGE,
        account_id=as_id(entry.get("id")) or "",
        dedupe_key=f"msg:{mid}",
        occurred_at=0.0 if occurred is None else occurred,
        contact_id=id_of(obj.get("recipient") if is_echo else obj.get("sender")),
        standby=key == "standby",
        raw=body,
    )


VERBATIM_MAX_BYTES = 64 * 1024  # a DM is ~0.4-1.5 KB; padding is not worth storing


def one_item_body(payload: object, body: bytes) -> str | None:
    """``body`` as text when it can stand as the ``raw`` of its only event: the decoded body
    ``payload`` is one envelope (``object`` and ``entry`` only) whose one entry holds one
    list of one item besides ``id`` and ``time`` (Meta's usual delivery of a DM). That text
    parses exactly as the canonical one-item envelope would. None otherwise, and when the
    text is not plain UTF-8 JSON (a BOM, or NUL bytes: UTF-16/32, which ``json.loads``
    accepts from bytes), holds a ``\\uD8xx``-style escape (perhaps a lone surrogate, which
    no text column can store: the canonical path refuses it), or is over
    :data:`VERBATIM_MAX_BYTES`. :func:`event_heads` then keeps the canonical raw for an
    event whose kind is not in :data:`~instaset.events.VERBATIM_KINDS`."""
    if len(body) > VERBATIM_MAX_BYTES:
        return None
    if not isinstance(payload, dict) or len(payload) != 2 or not isinstance(
            payload.get("object"), str):
        return None
    entries = payload.get("entry")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        return None
    items = [v for k, v in entries[0].items() if k not in ENTRY_META]
    if len(items) != 1 or not isinstance(items[0], list) or len(items[0]) != 1:
        return None
    # A byte search is memchr-fast; a three-byte one is not (0.7 us per KB): most DMs
    # hold no backslash at all.
    if b"\\" in body and (b"\\ud" in body or b"\\uD" in body):
        return None
    if b"\x00" in body or body.startswith(codecs.BOM_UTF8):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None
