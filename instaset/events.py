"""Meta Instagram webhook payloads as frozen event objects.

:func:`parse_webhook` turns one decoded webhook body (an envelope object, or the array of
envelopes Meta's docs sometimes show) into a flat list of :class:`Event`, one per item of every
``entry[].messaging[]``, ``entry[].standby[]`` and ``entry[].changes[]`` (and one per item of
any other list an entry carries). Contracts:

* Strict only at the top: :class:`~instaset.errors.PayloadError` is raised when the body is not
  an object or an array of objects, or an envelope has no ``entry`` list. Nothing else is ever
  raised for decoded JSON input; below the envelope, anything malformed or unknown becomes an
  :class:`UnknownEvent` (stored and skipped by the engine, never dropped silently).
* ``Event.raw`` is the compact, key-sorted JSON of a one-item envelope holding exactly that
  item, so ``parse_webhook(json.loads(ev.raw)) == [ev]``. The store keeps it as the raw row,
  or keeps the body's own text when the body holds that one item only
  (:func:`instaset.event_heads.one_item_body`; :func:`parse_stored` gives the same event
  from either).
* ``Event.dedupe_key`` depends only on what Meta repeats on a redelivery (ids, the item's own
  ``timestamp``), never on ``entry.time`` (the *send* time, which changes on retries) nor on
  whether the item arrived in ``standby[]``.
* :func:`instaset.event_heads.event_heads` gives the same events as plain :class:`Event`
  objects (only the attributes every event has: what ingest stores), at a fraction of the
  cost; :func:`heads_walk` is its general case.
* Times are UTC unix seconds; Meta sends ms on messaging items and seconds on changes, so
  :func:`normalise_timestamp` decides by magnitude.

The event types (:class:`EventKind`, :class:`Event` and its subclasses) live in
:mod:`instaset.event_types` and are re-exported here, as is :func:`normalise_timestamp` from
:mod:`instaset.event_values` (the payloads' scalar values). This module does no I/O and
imports only the standard library, :mod:`instaset.errors` and those two modules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

from instaset.errors import PayloadError
from instaset.event_types import (
    Attachment,
    CommentEvent,
    Event,
    EventKind,
    MentionEvent,
    MessageDeletedEvent,
    MessageEditEvent,
    MessageEvent,
    MessagingEvent,
    OptinEvent,
    PostbackEvent,
    ReactionEvent,
    ReadEvent,
    Referral,
    ReferralEvent,
    StoryRef,
    UnknownEvent,
)
from instaset.event_values import (
    JSONObject,
    as_id,
    as_object,
    as_text,
    canon,
    digest,
    id_of,
    normalise_timestamp,
    num_edit,
    plausible_time,
)

# --------------------------------------------------------------------------- parsing


def parse_webhook(payload: object) -> list[Event]:
    """Decoded webhook body -> events, in delivery order. See the module docstring for the
    contract; raises :class:`PayloadError` only for an unusable top level."""
    envelopes = _envelopes(payload)
    try:
        return [event for envelope in envelopes for event in _parse_envelope(envelope)]
    except RecursionError:
        # json.loads accepts nesting close to the recursion limit that json.dumps, called a few
        # frames deeper, cannot re-serialise. Refusing the body beats crashing the handler.
        raise PayloadError("webhook body is nested too deeply to process") from None


def heads_walk(payload: object, body: str | None = None) -> list[Event]:
    """:func:`instaset.event_heads.event_heads` for any body: the general walk with plain
    :class:`Event` objects (see there)."""
    envelopes = _envelopes(payload)
    try:
        return [event for envelope in envelopes
                for event in _parse_envelope(envelope, body, heads_only=True)]
    except RecursionError:
        raise PayloadError("webhook body is nested too deeply to process") from None


# Kinds whose stored raw only Python reads (parse_stored). SQL reads inside the raw of read
# receipts and comments (json_extract in store/stats.py and the stats triggers), and SQLite
# takes the first of a duplicated JSON key where Python takes the last: those keep the
# canonical raw, in which no key is duplicated (tests/test_events_verbatim.py checks that
# every json_extract of a raw in the SQL is about these kinds).
VERBATIM_KINDS = frozenset({
    EventKind.MESSAGE, EventKind.ECHO, EventKind.MESSAGE_DELETED, EventKind.MESSAGE_EDIT,
    EventKind.REACTION, EventKind.POSTBACK, EventKind.REFERRAL, EventKind.OPTIN,
})


def parse_stored(raw: str) -> list[Event]:
    """The event of a stored ``events.raw`` row (a one-item envelope, see the contract
    above): as ``parse_webhook(json.loads(raw))``, but its ``raw`` is ``raw`` itself instead
    of a re-serialisation (a fifth of the cost of parsing). An older row that holds more
    than one item is parsed like a webhook body."""
    payload = json.loads(raw)
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        return parse_webhook(payload)
    try:
        events = list(_parse_envelope(payload, raw))
    except RecursionError:
        raise PayloadError("stored event is nested too deeply to process") from None
    return events if len(events) == 1 else parse_webhook(payload)


def with_plausible_time(event: Event, received_at: float) -> Event:
    """``event`` with :func:`~instaset.event_values.plausible_time` as its time: a missing
    or implausible one (far ahead of its arrival, before 2010) becomes the arrival time.
    Processing and replay both decide with it, so they agree."""
    at = plausible_time(event.occurred_at, received_at)
    return event if at == event.occurred_at else replace(event, occurred_at=at)


def _envelopes(payload: object) -> list[JSONObject]:
    if isinstance(payload, dict):
        labelled = [("webhook body", payload)]
    elif isinstance(payload, list):
        labelled = []
        for index, item in enumerate(payload):
            if not isinstance(item, dict):
                raise PayloadError(
                    f"webhook body array element {index} is {_json_type(item)}, "
                    "expected an envelope object"
                )
            labelled.append((f"webhook body array element {index}", item))
    else:
        raise PayloadError(
            f"webhook body is {_json_type(payload)}, expected an object or an array of objects"
        )
    for where, envelope in labelled:
        if "entry" not in envelope:
            raise PayloadError(f"{where} has no 'entry' list")
        if not isinstance(envelope["entry"], list):
            raise PayloadError(
                f"{where}: 'entry' is {_json_type(envelope['entry'])}, expected a list"
            )
    return [envelope for _, envelope in labelled]


def _json_type(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number"}
    names |= {str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class _Ctx:
    """Where an item came from: enough to rebuild its one-item envelope and fill the common
    attributes."""

    object_name: str
    entry: JSONObject
    key: str | None  # None: the entry itself is malformed and is the item
    account_id: str
    entry_time: float | None
    # parse_stored: the stored raw row, which already is this item's canonical envelope.
    stored: str | None = None
    heads_only: bool = False  # heads_walk: plain Event objects, see there

    @property
    def standby(self) -> bool:
        return self.key == "standby"

    def raw(self, item: object, kind: EventKind) -> str:
        # heads_walk given the body keeps it only for the kinds no SQL reads into.
        if self.stored is not None and (not self.heads_only or kind in VERBATIM_KINDS):
            return self.stored
        if self.key is None:  # the entry itself is malformed: keep it whole
            return canon({"object": self.object_name, "entry": [item]})
        entry: JSONObject = {k: self.entry[k] for k in ("id", "time") if k in self.entry}
        entry[self.key] = [item]
        return canon({"object": self.object_name, "entry": [entry]})

    def when(self, *candidates: object) -> float:
        for candidate in candidates:
            seconds = normalise_timestamp(candidate)
            if seconds is not None:
                return seconds
        return self.entry_time if self.entry_time is not None else 0.0

    def common(
        self, kind: EventKind, key: str, contact: str | None, item: object, when: float
    ) -> JSONObject:
        """Keyword arguments for the attributes every :class:`Event` has."""
        return {
            "kind": kind,
            "account_id": self.account_id,
            "dedupe_key": key,
            "occurred_at": when,
            "contact_id": contact,
            "standby": self.standby,
            "raw": self.raw(item, kind),
        }

    def head(self, kind: EventKind, key: str, contact: str | None, item: object,
             when: float) -> Event:
        """The plain :class:`Event` of an item (see :func:`heads_walk`)."""
        return Event(**self.common(kind, key, contact, item, when))

    def unknown(self, item: object, hashed: object, field: str | None, reason: str) -> Event:
        obj = as_object(hashed)
        when = self.when(obj.get("timestamp") if obj is not None else None)
        key = "unk:" + digest(self.account_id, hashed)
        if self.heads_only:
            return self.head(EventKind.UNKNOWN, key, None, item, when)
        return UnknownEvent(
            **self.common(EventKind.UNKNOWN, key, None, item, when), field=field, reason=reason
        )


ENTRY_META = ("id", "time")  # the entry keys that are not lists of items


def _parse_envelope(
    envelope: JSONObject, stored: str | None = None, *, heads_only: bool = False,
) -> Iterator[Event]:
    obj = envelope.get("object")
    obj_name = obj if isinstance(obj, str) else "instagram"
    for entry in envelope["entry"]:
        if not isinstance(entry, dict):
            ctx = _Ctx(obj_name, {}, None, "", None, heads_only=heads_only)
            yield ctx.unknown(entry, entry, None, f"entry is {_json_type(entry)}, not an object")
            continue
        account_id = as_id(entry.get("id")) or ""
        entry_time = normalise_timestamp(entry.get("time"))
        for key, value in entry.items():
            if key in ENTRY_META or value is None:
                continue
            ctx = _Ctx(obj_name, entry, key, account_id, entry_time, stored, heads_only)
            # A lone object where a list belongs is taken as a one-item list (lenient, and
            # the raw envelope then holds [value], which parses the same way).
            for item in value if isinstance(value, list) else [value]:
                yield _parse_item(ctx, item)


def _parse_item(ctx: _Ctx, item: object) -> Event:
    if ctx.key in ("messaging", "standby"):
        return _parse_messaging(ctx, item, item)
    if ctx.key == "changes":
        return _parse_change(ctx, item)
    return ctx.unknown(item, item, ctx.key, f"unknown entry key {ctx.key!r}")


# Checked in this order (never dict order: raw is key-sorted, so dict order changes on a
# round trip).
_MESSAGING_KEYS = ("message", "message_edit", "reaction", "read", "postback", "referral", "optin")
_MESSAGING_META = frozenset({"sender", "recipient", "timestamp"})

# Dashboard "Test" deliveries put messaging items in changes[] under these field names.
_MESSAGING_FIELDS = frozenset(
    {"messages", "message_echoes", "message_edit", "message_reactions", "messaging_optins"}
    | {"messaging_postbacks", "messaging_referral", "messaging_seen"}
)


@dataclass(frozen=True, slots=True)
class _Msg:
    """The common part of one messaging item, parsed once."""

    ctx: _Ctx
    item: object  # what goes into raw (a change item for dashboard-style deliveries)
    body: JSONObject  # the messaging item itself
    sender_id: str | None
    recipient_id: str | None
    occurred_at: float

    @property
    def timestamp(self) -> object:
        return self.body.get("timestamp")

    def common(self, kind: EventKind, dedupe_key: str, contact_id: str | None) -> JSONObject:
        common = self.ctx.common(kind, dedupe_key, contact_id, self.item, self.occurred_at)
        return common | {"sender_id": self.sender_id, "recipient_id": self.recipient_id}

    @property
    def contact(self) -> str | None:
        """The person: the recipient when the business is the sender, else the sender."""
        if self.sender_id is not None and self.sender_id == self.ctx.account_id:
            return self.recipient_id
        return self.sender_id

    def unknown(self, field: str | None, reason: str) -> Event:
        return self.ctx.unknown(self.item, self.body, field, reason)

    @property
    def heads_only(self) -> bool:
        return self.ctx.heads_only

    def head(self, kind: EventKind, dedupe_key: str, contact_id: str | None) -> Event:
        return self.ctx.head(kind, dedupe_key, contact_id, self.item, self.occurred_at)


def _parse_messaging(ctx: _Ctx, item: object, body: object) -> Event:
    obj = as_object(body)
    if obj is None:
        return ctx.unknown(item, body, None, f"messaging item is {_json_type(body)}")
    m = _Msg(
        ctx=ctx,
        item=item,
        body=obj,
        sender_id=id_of(obj.get("sender")),
        recipient_id=id_of(obj.get("recipient")),
        occurred_at=ctx.when(obj.get("timestamp")),
    )
    for key in _MESSAGING_KEYS:
        if key not in obj:
            continue
        value = as_object(obj[key])
        if value is None:
            return m.unknown(key, f"{key} is {_json_type(obj[key])}, expected an object")
        return _HANDLERS[key](m, value)
    others = sorted(k for k in obj if k not in _MESSAGING_META)
    return m.unknown(others[0] if others else None, "no known event in messaging item")


def _message(m: _Msg, msg: JSONObject) -> Event:
    mid = as_id(msg.get("mid"))
    if mid is None:
        return m.unknown("message", "message has no mid")
    if msg.get("is_deleted") is True:
        if m.heads_only:
            return m.head(EventKind.MESSAGE_DELETED, f"del:{mid}", m.contact)
        return MessageDeletedEvent(
            **m.common(EventKind.MESSAGE_DELETED, f"del:{mid}", m.contact), mid=mid
        )
    is_echo = msg.get("is_echo") is True
    kind = EventKind.ECHO if is_echo else EventKind.MESSAGE
    contact = m.recipient_id if is_echo else m.sender_id
    if m.heads_only:
        return m.head(kind, f"msg:{mid}", contact)
    raw_attachments = msg.get("attachments")
    if isinstance(raw_attachments, dict):
        raw_attachments = [raw_attachments]
    attachments = tuple(
        _attachment(a)
        for a in (raw_attachments if isinstance(raw_attachments, list) else [])
        if isinstance(a, dict)
    )
    quick_reply = as_object(msg.get("quick_reply"))
    reply_to = as_object(msg.get("reply_to")) or {}
    story = as_object(reply_to.get("story"))
    referral = as_object(msg.get("referral"))
    return MessageEvent(
        **m.common(kind, f"msg:{mid}", contact),
        mid=mid,
        text=as_text(msg.get("text")),
        attachments=attachments,
        is_echo=is_echo,
        is_self=msg.get("is_self") is True,
        is_unsupported=msg.get("is_unsupported") is True,
        quick_reply_payload=as_text(quick_reply.get("payload")) if quick_reply else None,
        reply_to_mid=as_id(reply_to.get("mid")),
        reply_to_story=(StoryRef(as_id(story.get("id")), as_text(story.get("url")))
                        if story else None),
        referral=_referral(referral) if referral is not None else None,
    )


def _attachment(att: JSONObject) -> Attachment:
    payload = as_object(att.get("payload")) or {}
    media_id = None
    for key in ("reel_video_id", "ig_post_media_id", "id"):
        media_id = as_id(payload.get(key))
        if media_id is not None:
            break
    return Attachment(
        type=as_text(att.get("type")) or "",
        url=as_text(payload.get("url")) or as_text(att.get("url")),
        title=as_text(payload.get("title")) or as_text(att.get("title")),
        media_id=media_id,
        payload=canon(att.get("payload")),
    )


def _referral(ref: JSONObject) -> Referral:
    return Referral(
        ref=as_text(ref.get("ref")),
        source=as_text(ref.get("source")),
        type=as_text(ref.get("type")),
        ad_id=as_id(ref.get("ad_id")),
    )


def _message_edit(m: _Msg, edit: JSONObject) -> Event:
    mid = as_id(edit.get("mid"))
    if mid is None:
        return m.unknown("message_edit", "message_edit has no mid")
    edits = num_edit(edit.get("num_edit"))
    text = as_text(edit.get("text"))
    # Without its number, an edit is told from the message's other edits by what it says
    # and when (the key keeps the mid first: edits of one message stay together).
    key = f"edit:{mid}:{edits}" if edits else f"edit:{mid}:" + digest(text, m.timestamp)
    if m.heads_only:
        return m.head(EventKind.MESSAGE_EDIT, key, m.contact)
    return MessageEditEvent(
        **m.common(EventKind.MESSAGE_EDIT, key, m.contact),
        mid=mid,
        text=text,
        num_edit=edits,
    )


def _reaction(m: _Msg, reaction: JSONObject) -> Event:
    mid = as_id(reaction.get("mid"))
    if mid is None:
        return m.unknown("reaction", "reaction has no mid")
    name, emoji = as_text(reaction.get("reaction")), as_text(reaction.get("emoji"))
    action = as_text(reaction.get("action")) or ("react" if name or emoji else "unreact")
    # The mid first (as in edit:<mid>:...): a stored message finds the reactions that
    # came before it by this prefix (store.history.insert_message).
    key = f"react:{mid}:" + digest(m.ctx.account_id, m.sender_id, mid, action, name,
                                   m.timestamp)
    if m.heads_only:
        return m.head(EventKind.REACTION, key, m.contact)
    return ReactionEvent(
        **m.common(EventKind.REACTION, key, m.contact),
        mid=mid,
        action=action,
        reaction=name,
        emoji=emoji,
    )


def _read(m: _Msg, read: JSONObject) -> Event:
    mid = as_id(read.get("mid"))
    if mid is not None:
        key = f"read:{m.ctx.account_id}:{m.sender_id or ''}:{mid}"
    else:
        key = "read:" + digest(m.ctx.account_id, m.sender_id, read, m.timestamp)
    if m.heads_only:
        return m.head(EventKind.READ, key, m.contact)
    return ReadEvent(**m.common(EventKind.READ, key, m.contact), mid=mid)


def _postback(m: _Msg, postback: JSONObject) -> Event:
    mid = as_id(postback.get("mid"))
    payload = as_text(postback.get("payload"))
    # Ice-breaker taps may come without a mid; the item timestamp then tells taps apart.
    key = (
        f"pb:{mid}" if mid else "pb:" + digest(m.ctx.account_id, m.sender_id, payload, m.timestamp)
    )
    if m.heads_only:
        return m.head(EventKind.POSTBACK, key, m.contact)
    return PostbackEvent(
        **m.common(EventKind.POSTBACK, key, m.contact),
        mid=mid,
        title=as_text(postback.get("title")),
        payload=payload,
    )


def _standalone_referral(m: _Msg, referral: JSONObject) -> Event:
    key = "ref:" + digest(m.ctx.account_id, m.sender_id, referral, m.timestamp)
    if m.heads_only:
        return m.head(EventKind.REFERRAL, key, m.contact)
    return ReferralEvent(
        **m.common(EventKind.REFERRAL, key, m.contact), referral=_referral(referral)
    )


def _optin(m: _Msg, optin: JSONObject) -> Event:
    key = "optin:" + digest(m.ctx.account_id, m.sender_id, optin, m.timestamp)
    if m.heads_only:
        return m.head(EventKind.OPTIN, key, m.contact)
    return OptinEvent(
        **m.common(EventKind.OPTIN, key, m.contact),
        payload=as_text(optin.get("payload")),
        ref=as_text(optin.get("ref")),
        optin_type=as_text(optin.get("type")),
    )


_HANDLERS = {
    "message": _message,
    "message_edit": _message_edit,
    "reaction": _reaction,
    "read": _read,
    "postback": _postback,
    "referral": _standalone_referral,
    "optin": _optin,
}


def _parse_change(ctx: _Ctx, item: object) -> Event:
    change = as_object(item)
    if change is None:
        return ctx.unknown(item, item, None, f"change is {_json_type(item)}, expected an object")
    name = as_text(change.get("field"))
    value = as_object(change.get("value"))
    if name is None:
        return ctx.unknown(item, item, None, "change has no field name")
    if value is None:
        return ctx.unknown(item, item, name, f"change {name!r} has no value object")
    if name in ("comments", "live_comments"):
        return _comment(ctx, item, name, value)
    if name == "mentions":
        return _mention(ctx, item, value)
    if name in _MESSAGING_FIELDS:
        return _parse_messaging(ctx, item, value)
    return ctx.unknown(item, item, name, f"unsupported change field {name!r}")


def _comment(ctx: _Ctx, item: object, name: str, value: JSONObject) -> Event:
    comment_id = as_id(value.get("id")) or as_id(value.get("comment_id"))
    if comment_id is None:
        return ctx.unknown(item, item, name, "comment has no id")
    sender = as_object(value.get("from")) or {}
    media = as_object(value.get("media")) or {}
    from_id = as_id(sender.get("id"))
    live = name == "live_comments"
    kind, key = (EventKind.LIVE_COMMENT, "live") if live else (EventKind.COMMENT, "comment")
    when = ctx.when(value.get("timestamp"), value.get("created_time"))
    if ctx.heads_only:
        return ctx.head(kind, f"{key}:{comment_id}", from_id, item, when)
    return CommentEvent(
        **ctx.common(kind, f"{key}:{comment_id}", from_id, item, when),
        comment_id=comment_id,
        text=as_text(value.get("text")),
        from_id=from_id,
        from_username=as_text(sender.get("username")),
        media_id=as_id(media.get("id")),
        media_product_type=as_text(media.get("media_product_type")),
        parent_id=as_id(value.get("parent_id")),
    )


def _mention(ctx: _Ctx, item: object, value: JSONObject) -> Event:
    comment_id, media_id = as_id(value.get("comment_id")), as_id(value.get("media_id"))
    if comment_id is None and media_id is None:
        return ctx.unknown(item, item, "mentions", "mention has neither comment_id nor media_id")
    when = ctx.when(value.get("timestamp"), value.get("created_time"))
    if ctx.heads_only:
        return ctx.head(EventKind.MENTION, f"mention:{comment_id or media_id}", None, item, when)
    return MentionEvent(
        **ctx.common(EventKind.MENTION, f"mention:{comment_id or media_id}", None, item, when),
        media_id=media_id,
        comment_id=comment_id,
    )


__all__ = [
    "Attachment",
    "CommentEvent",
    "Event",
    "EventKind",
    "JSONObject",
    "MentionEvent",
    "MessageDeletedEvent",
    "MessageEditEvent",
    "MessageEvent",
    "MessagingEvent",
    "OptinEvent",
    "PostbackEvent",
    "ReactionEvent",
    "ReadEvent",
    "Referral",
    "ReferralEvent",
    "StoryRef",
    "UnknownEvent",
    "heads_walk",
    "normalise_timestamp",
    "parse_stored",
    "parse_webhook",
    "with_plausible_time",
]
