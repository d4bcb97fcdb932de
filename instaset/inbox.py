"""The creator's inbox: conversation summaries, threads, and replying as the human.

Contracts:
- :func:`conversations` lists conversations newest first with their unread count, lead stage
  (:func:`~instaset.store.ai.shown_stage_sql`: as ``instaset leads`` has it),
  automation state (on, or paused until when) and
  window state (how long the creator may still answer: 24 h after the person's last
  message, 7 days for a human reply with the ``HUMAN_AGENT`` tag).
- :func:`thread` returns a conversation's messages (media described, reactions, who sent
  each) and marks the conversation read.
- :func:`reply` sends a text as the human: it checks the sending rules first (a refusal sends
  nothing and changes nothing), then, in one transaction, enqueues the send
  (``sent_by="human"``), pauses automation for ``handoff.pause_for`` and marks the thread
  read, then delivers that send itself (and only that send) so the caller learns the
  outcome; when a running daemon takes the job first, it waits for the daemon's verdict
  instead. A reply that ends refused or failed gives the conversation back its previous
  pause and unread count (the send stays recorded, with its reason); the caller gets the
  refusal's words (Meta's, or the sending rules'), stored on the send (``sends.detail``),
  also when the daemon refused it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instaset import timefmt
from instaset.errors import InstasetError
from instaset.media_labels import describe_attachment
from instaset.rules import (
    HUMAN_AGENT_SECONDS,
    WINDOW_SECONDS,
    Clearance,
    SendFacts,
    SendKind,
    check_send,
)
from instaset.store import history
from instaset.store import inbox as store
from instaset.store import jobs as jobstore
from instaset.store import sends as sendstore
from instaset.store.db import Database
from instaset.timefmt import human_duration

if TYPE_CHECKING:
    # The daemon and the outbox pull in aiohttp and the engine; listing the inbox must not
    # pay for them (they are imported where a reply is sent).
    from instaset.daemon import Runtime

FINAL_STATES = ("sent", "refused", "failed")


# ISO 8601 UTC with a ``Z`` (the JSON time format of every command); None stays None.
iso_utc = timefmt.iso_or_none


# -- window and automation state --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WindowState:
    """``open``: anyone may message until ``closes_at``; ``human``: only a human reply (with
    the HUMAN_AGENT tag) until ``closes_at``; ``closed``: nobody may DM until the person
    writes again; ``never``: the person never messaged (comments do not open a window)."""

    state: str
    closes_at: float | None

    def to_json(self, now: float) -> dict[str, Any]:
        left = None if self.closes_at is None else max(0.0, self.closes_at - now)
        return {"state": self.state, "closes_at": iso_utc(self.closes_at),
                "seconds_left": None if left is None else round(left)}

    def describe(self, now: float) -> str:
        if self.state == "open" and self.closes_at is not None:
            return f"{human_duration(self.closes_at - now)} left"
        if self.state == "human" and self.closes_at is not None:
            return f"human only, {human_duration(self.closes_at - now)} left"
        return "closed" if self.state == "closed" else "no DM yet"


def window_state(last_inbound_at: float | None, now: float) -> WindowState:
    if last_inbound_at is None:
        return WindowState("never", None)
    age = now - last_inbound_at
    if age <= WINDOW_SECONDS:
        return WindowState("open", last_inbound_at + WINDOW_SECONDS)
    if age <= HUMAN_AGENT_SECONDS:
        return WindowState("human", last_inbound_at + HUMAN_AGENT_SECONDS)
    return WindowState("closed", None)


def automation_json(paused_until: float | None, now: float) -> dict[str, Any]:
    if paused_until is not None and paused_until > now:
        return {"state": "paused", "paused_until": iso_utc(paused_until)}
    return {"state": "on", "paused_until": None}


def describe_automation(paused_until: float | None, now: float) -> str:
    if paused_until is not None and paused_until > now:
        return f"paused {human_duration(paused_until - now)}"
    return "on"


# -- messages ---------------------------------------------------------------------------------
def attachments_of(raw: str | None) -> list[dict[str, Any]]:
    """The attachment objects of a stored ``attachments`` JSON column."""
    try:
        return _objects(json.loads(raw or "[]"))
    except ValueError:
        return []


def _objects(items: object) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else: none)."""
    return [a for a in items if isinstance(a, dict)] if isinstance(items, list) else []


def describe_media(attachments: list[dict[str, Any]]) -> list[str]:
    """``[image]``, ``[reel: caption]``, ``[shared post]`` ... (the events module's labels)."""
    out: list[str] = []
    for a in attachments:
        kind = str(a.get("type") or "attachment")
        title = a.get("title")
        if kind == "postback":  # a button tap: the title is the payload, not a caption
            out.append("[button]")
            continue
        out.append(describe_attachment(kind, title if isinstance(title, str) else None))
    return out


def preview(text: str | None, attachments: list[dict[str, Any]], deleted: bool = False) -> str:
    if deleted:
        return "[unsent]"
    parts = [text] if text else []
    parts.extend(describe_media(attachments))
    return " ".join(parts) if parts else "[empty]"


def message_json(row: sqlite3.Row) -> dict[str, Any]:
    atts = attachments_of(row["attachments"])
    try:
        reactions = json.loads(row["reactions"] or "{}")
        edits = json.loads(row["edits"] or "[]")
    except ValueError:
        reactions, edits = {}, []
    deleted = row["deleted_at"] is not None
    return {
        "mid": row["mid"],
        "direction": row["direction"],
        "text": row["text"],
        "created_at": iso_utc(row["created_at"]),
        "sent_by": row["sent_by"],
        "attachments": [{"type": a.get("type"), "url": a.get("url"), "title": a.get("title")}
                        for a in atts],
        "media": describe_media(atts),
        "reactions": reactions if isinstance(reactions, dict) else {},
        "reply_to": row["reply_to"],
        "edited": bool(edits),
        "deleted_at": iso_utc(row["deleted_at"]),
        "preview": preview(row["text"], atts, deleted),
    }


# -- conversations ----------------------------------------------------------------------------
def conversation_json(row: sqlite3.Row, now: float) -> dict[str, Any]:
    last: dict[str, Any] | None = json.loads(row["last_message"]) if row["last_message"] else None
    last_preview = None
    if last is not None:
        atts = _objects(last.get("attachments"))
        last_preview = preview(last.get("text"), atts, bool(last.get("deleted")))
    return {
        "account_id": row["account_id"],
        "contact_id": row["contact_id"],
        "username": row["username"],
        "name": row["name"],
        "stage": row["stage"],
        "unread": int(row["unread"]),
        "last_message_at": iso_utc(row["last_message_at"]),
        "last_message": last_preview,
        "last_from": None if last is None else last.get("sent_by"),
        "automation": automation_json(row["paused_until"], now),
        "window": window_state(row["last_inbound_at"], now).to_json(now),
    }


async def conversations(
    db: Database, now: float, *, limit: int = 50, unread_only: bool = False,
    account_id: str | None = None,
) -> list[dict[str, Any]]:
    rows = await store.list_conversations(db, limit=limit, account_id=account_id,
                                          unread_only=unread_only)
    return [conversation_json(r, now) for r in rows]


@dataclass(frozen=True, slots=True)
class ContactRef:
    account_id: str
    contact_id: str
    username: str | None

    @property
    def label(self) -> str:
        return f"@{self.username}" if self.username else self.contact_id


async def resolve_contact(db: Database, ident: str, account_id: str | None = None) -> ContactRef:
    """The one contact named by ``ident`` (username or IGSID); a clear error when there is
    none or several (several connected accounts talking to the same person)."""
    rows = [r for r in await store.find_contacts(db, ident)
            if account_id is None or r["account_id"] == account_id]
    if not rows:
        raise InstasetError(
            f"no contact {ident!r}: give a username or an Instagram-scoped id from "
            "`instaset inbox`"
        )
    if len(rows) > 1 and rows[0]["contact_id"] != ident:
        accounts = ", ".join(sorted({r["account_id"] for r in rows}))
        raise InstasetError(
            f"{ident!r} names {len(rows)} contacts (accounts {accounts}); "
            "use the Instagram-scoped id instead"
        )
    r = rows[0]
    return ContactRef(r["account_id"], r["contact_id"], r["username"])


async def thread(
    db: Database, ref: ContactRef, now: float, *, limit: int = 200, mark_read: bool = True
) -> dict[str, Any]:
    """``{"contact": {...}, "messages": [...]}`` (the ``inbox show --json`` document), plus
    ``held``: the contact's sends that did not go out, with their reasons and the words of
    a refusal (``detail``: Meta's or the sending rules'; null when none were stored) and
    ``what`` they were (:func:`send_what`: ``text`` is null for media or an AI reply);
    ``comments``: the contact's comments; ``public_replies``: the public replies that went
    out under them (``sent_at``: when). :func:`timeline` puts them all in time order."""
    rows = await store.find_contacts(db, ref.contact_id)
    row = next(r for r in rows if r["account_id"] == ref.account_id)
    state = json.loads(row["state"] or "{}") if row["state"] else {}
    contact = {
        "account_id": ref.account_id,
        "id": ref.contact_id,
        "username": row["username"],
        "name": row["name"],
        "stage": row["stage"],  # store.ai.shown_stage_sql
        "tags": state.get("tags") or [],
        "fields": state.get("fields") or {},
        "first_seen_at": iso_utc(row["first_seen_at"]),
        "unread": int(row["unread"] or 0),
        "automation": automation_json(row["paused_until"], now),
        "window": window_state(row["last_inbound_at"], now).to_json(now),
    }
    messages = [message_json(m) for m in await history.thread(db, ref.account_id,
                                                              ref.contact_id, limit)]
    held = [
        {"key": s["key"], "kind": s["kind"], "state": s["state"], "reason": s["reason"],
         "detail": s["detail"], "sent_by": s["sent_by"], "workflow": s["workflow"],
         "text": _send_text(s["body"]), "what": send_what(s["kind"], s["body"]),
         "created_at": iso_utc(s["created_at"])}
        for s in await store.contact_sends(db, ref.account_id, ref.contact_id)
    ]
    public = [
        {"key": s["key"], "comment_id": s["comment_id"], "text": _send_text(s["body"]),
         "sent_by": s["sent_by"], "workflow": s["workflow"], "message_id": s["message_id"],
         "created_at": iso_utc(s["created_at"]), "sent_at": iso_utc(s["updated_at"])}
        for s in await store.public_replies_sent(db, ref.account_id, ref.contact_id)
    ]
    comments = [c for r in await history.contact_comments(db, ref.account_id, ref.contact_id)
                if (c := _comment_json(r)) is not None]
    if mark_read:
        await store.mark_read(db, ref.account_id, ref.contact_id, now)
    return {"contact": contact, "messages": messages, "held": held,
            "comments": comments[::-1], "public_replies": public}


def timeline(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A :func:`thread` document in time order, as ``inbox show`` and the TUI print it:
    ``("comment", c)``, ``("message", m)``, ``("public_reply", p)`` (at ``sent_at``: when
    it went) and ``("unsent", h)`` (a send refused or failed, at ``created_at``: when it
    was decided). A comment goes before anything of the same instant (it is what that
    answers); otherwise items of the same instant keep this order."""
    items: list[tuple[str, dict[str, Any]]] = [("comment", c) for c in doc["comments"]]
    items += [("message", m) for m in doc["messages"]]
    items += [("public_reply", p) for p in doc["public_replies"]]
    items += [("unsent", h) for h in doc["held"] if h["state"] in ("refused", "failed")]
    return sorted(items, key=lambda item: (_epoch(item_time(*item)), item[0] != "comment"))


def item_time(kind: str, item: dict[str, Any]) -> str | None:
    """When a :func:`timeline` item happened (ISO 8601 UTC)."""
    at = item["sent_at"] if kind == "public_reply" else item["created_at"]
    return at if isinstance(at, str) else None


def _epoch(iso: str | None) -> float:
    from datetime import datetime

    return 0.0 if iso is None else datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _comment_json(row: sqlite3.Row) -> dict[str, Any] | None:
    """A stored comment event as the thread shows it (oldest first in ``comments``): what
    the contact wrote under which media, which the private reply answered."""
    from instaset.events import CommentEvent, parse_stored

    try:
        parsed = parse_stored(row["raw"])
    except ValueError:
        return None
    event = parsed[0] if len(parsed) == 1 else None
    if not isinstance(event, CommentEvent):
        return None
    return {"comment_id": event.comment_id, "media_id": event.media_id, "text": event.text,
            "created_at": iso_utc(row["occurred_at"] or row["received_at"]),
            "reply": event.is_reply, "live": event.kind.value == "live_comment"}


# What an unsent send was when it has no text of its own: by the step the engine refused
# before the text was written (automation._refused_sends), else by its kind (a text send
# without text stored before the step was recorded is one of those two).
_STEP_WHAT = {"ai_reply": "(AI reply)", "offer_booking": "(booking offer)"}
_KIND_WHAT = {"text": "(AI reply or booking offer)", "private_reply": "(AI private reply)",
              "template": "(buttons)", "public_reply": "(no text)"}


def send_what(kind: str, body: str) -> str:
    """What a stored send (``kind``, its Outgoing ``body`` as JSON) was, in words for the
    thread: its text, a medium (``[image]``), a button message's text or a card message's
    titles, or what it stands for: ``(AI reply)``, ``(booking offer)``, ``(AI private
    reply)`` (an AI answer to a comment), ``(typing indicator)``, ``(reaction love)``. A
    public reply's says it is one: ``public reply under the comment: ...``."""
    try:
        d = json.loads(body)
    except ValueError:
        d = None
    d = d if isinstance(d, dict) else {}
    action = d.get("action")
    what: str | None
    if kind == "media":
        what = describe_attachment(str(d.get("media_type") or "attachment"), None)
    elif kind in ("sender_action", "react"):
        noun = "typing indicator" if action == "typing_on" else (
            "reaction" if kind == "react" else "sender action")
        what = f"({noun}{f' {action}' if action and action != 'typing_on' else ''})"
    else:
        text = d.get("text")
        what = (text if isinstance(text, str) else None) or _template_words(d.get("template"))
    if not what:
        step = d.get("step")
        what = ("(AI private reply)" if kind == "private_reply" and step == "ai_reply"
                else _STEP_WHAT.get(str(step)) or _KIND_WHAT.get(kind, f"({kind})"))
    return f"public reply under the comment: {what}" if kind == "public_reply" else what


def _template_words(raw: object) -> str | None:
    """A button message's text, or a card message's titles (``[cards: A, B]``)."""
    try:
        t = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if not isinstance(t, dict):
        return None
    if isinstance(t.get("text"), str):
        return f"{t['text']} [buttons]"
    titles = [str(e.get("title")) for e in _objects(t.get("elements"))]
    return f"[cards: {', '.join(titles)}]" if titles else None


def _send_text(body: str) -> str | None:
    """The text of a stored send body (an Outgoing as JSON), read without the outbox."""
    try:
        text = json.loads(body).get("text")
    except (ValueError, AttributeError):
        return None
    return text if isinstance(text, str) else None


async def pause(db: Database, ref: ContactRef, until: float | None, now: float) -> None:
    if await store.set_paused(db, ref.account_id, ref.contact_id, until, now) == 0:
        raise InstasetError(f"{ref.label} has no conversation yet")


# -- replying as the human --------------------------------------------------------------------
@dataclass
class ReplyOutcome:
    """``state``: sent, refused, failed (Meta said no), or queued (not delivered yet: a
    rate budget, a transient error, or a daemon still working on it). ``paused_until``:
    when the hand-off pause ends; None when the reply did not pause automation (refused,
    failed)."""

    state: str
    keys: list[str]
    human_agent_tag: bool = False
    reason: str | None = None
    detail: str | None = None
    paused_until: float | None = None
    message_ids: list[str] = field(default_factory=list)


async def reply(
    rt: Runtime, ref: ContactRef, text: str, *, wait: float = 30.0, poll: float = 0.2,
) -> ReplyOutcome:
    """Send ``text`` to the contact as the human. See the module docstring."""
    from instaset.outbox import Outgoing, enqueue_sends

    text = text.strip()
    if not text:
        raise InstasetError("the reply is empty")
    now = rt.clock()
    key = f"human:{ref.account_id}:{ref.contact_id}:{uuid.uuid4().hex[:16]}"
    ctx = await sendstore.send_context(rt.db, ref.account_id, ref.contact_id, None, key)
    facts = SendFacts(
        kind=SendKind.TEXT, human=True,
        account_state=ctx["account_state"] if ctx else "disconnected",
        last_inbound_at=ctx["last_inbound_at"] if ctx else None, paused_until=None,
    )
    verdict = check_send(facts, now)
    if not isinstance(verdict, Clearance):
        return ReplyOutcome("refused", [], reason=verdict.reason, detail=verdict.detail)
    until = now + rt.config.handoff.pause_for.total_seconds()
    async with rt.db.tx() as conn:
        before = await history.get_conversation(conn, ref.account_id, ref.contact_id)
        # Refused or failed later (at the daemon, after this command stopped waiting), the
        # send gives the conversation back its pause and unread count itself (outbox).
        undo = (until, before["paused_until"] if before is not None else None,
                int(before["unread"]) if before is not None else 0)
        out = Outgoing(key=key, kind=SendKind.TEXT, account_id=ref.account_id,
                       contact_id=ref.contact_id, text=text, sent_by="human", undo_pause=undo)
        keys = await enqueue_sends(conn, [out], now)
        # The creator took over: automation stays out of this thread for a while, and the
        # thread counts as read (they have just answered it). In the same transaction as
        # the send, so automation cannot answer alongside the reply while it goes out.
        # A longer pause set before (a workflow's handoff, `inbox pause --for 30d`) stands.
        await history.creator_took_over(conn, ref.account_id, ref.contact_id, now,
                                        until=until, said_at=None)
    done = await deliver_now(rt, keys, wait=wait, poll=poll)
    if done.state in ("sent", "queued"):
        previous = before["paused_until"] if before is not None else None
        paused: float | None = max(until, previous or 0.0)
        async with rt.db.tx() as conn:
            await history.drop_question(conn, ref.account_id, ref.contact_id, rt.clock(),
                                        said_at=now)
    else:
        # Refused or failed: a reply that never went out must not silence the automation
        # for hours. The conversation gets back the pause and unread count it had.
        paused = None
        async with rt.db.tx() as conn:
            await history.undo_pause(
                conn, ref.account_id, ref.contact_id, rt.clock(), paused_until=until,
                previous_until=before["paused_until"] if before is not None else None,
                previous_unread=int(before["unread"]) if before is not None else 0,
            )
    return ReplyOutcome(done.state, keys, human_agent_tag=verdict.human_agent_tag,
                        reason=done.reason, detail=done.detail, paused_until=paused,
                        message_ids=done.message_ids)


@dataclass
class Delivery:
    """What :func:`deliver_now` got done: ``state`` as in :class:`ReplyOutcome`; ``reason``
    and ``detail`` of the first part that did not go out; the message ids of those that did."""

    state: str
    reason: str | None = None
    detail: str | None = None
    message_ids: list[str] = field(default_factory=list)


async def deliver_now(rt: Runtime, keys: list[str], *, wait: float, poll: float) -> Delivery:
    """Deliver the enqueued sends ``keys`` in order from this process (the CLI), each through
    its own job, waiting up to ``wait`` seconds for each; stops at the first one that is not
    sent. ``detail`` carries the refusal's words as stored on the send (Meta's, or the
    sending rules'), whichever process refused it."""
    rt.deliverer.human_watched = True  # the creator sees a refusal here, not as a notice
    done = Delivery("queued")
    from instaset.retention import daemon_lock

    # With `instaset serve` running on this database, its worker sends: it holds the
    # account's rate budgets, and a sandbox account's token and address exist only in it.
    with daemon_lock(rt.db.path) as no_daemon:
        by_daemon = not no_daemon
    try:
        for part in keys:
            state = await _deliver_one(rt, part, rt.clock() + wait, poll, claim=not by_daemon)
            row = await sendstore.get_send(rt.db, part)
            if row is None:  # purged meanwhile
                return Delivery("failed", "purged", "the send was purged", done.message_ids)
            if row["message_id"]:
                done.message_ids.append(row["message_id"])
            if state != "sent":
                done.state, done.reason = state, row["reason"]
                if state == "queued":
                    done.detail = await jobstore.last_error(rt.db, f"send:{part}")
                else:
                    done.detail = row["detail"] or no_words(row["contact_id"])
                return done
        done.state = "sent"
        return done
    finally:
        rt.deliverer.human_watched = False


def no_words(contact_id: str | None) -> str:
    """What is said of a refusal whose words were not stored (a send refused before
    migration 0021, or by an older daemon): where to look."""
    where = f"`instaset inbox show {contact_id}`" if contact_id else "`instaset inbox show`"
    return f"no details were stored with it; {where} lists what was not sent"


async def _deliver_one(rt: Runtime, key: str, deadline: float, poll: float, *,
                       claim: bool = True) -> str:
    """Deliver the send ``key`` through its own job (run as the daemon's worker runs it), or
    with ``claim=False`` wait for the running daemon to deliver it; the send's final state,
    or ``queued`` when it is not final by ``deadline``."""
    job_key = f"send:{key}"
    lease = rt.worker.settings.lease_seconds
    while True:
        row = await sendstore.get_send(rt.db, key)
        if row is not None and row["state"] in FINAL_STATES:
            return str(row["state"])
        now = rt.clock()
        if now >= deadline:
            return "queued"
        job = (await jobstore.claim_key(rt.db, job_key, rt.worker.name, now, lease)
               if claim else None)
        if job is None:
            # A daemon holds it, or it waits for its turn: look again shortly.
            await asyncio.sleep(min(poll, max(0.0, deadline - now)))
            continue
        outcome = await rt.worker.execute(job)
        if outcome.state == "deferred" and outcome.run_at is not None:
            if outcome.run_at >= deadline:
                return "queued"
            await asyncio.sleep(max(0.0, outcome.run_at - rt.clock()))
        elif outcome.state != "done":
            return "queued"
