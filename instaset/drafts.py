"""Acting on AI drafts: list them, approve one, send an edited version, or reject it.

The AI feature (:mod:`instaset.ai.feature`) stores a reply in ``ai_drafts`` instead of
sending it when the workflow's AI mode is ``draft`` or a guardrail handed the conversation
off. This module is what the creator does with them (``instaset inbox drafts|approve|edit|
reject``).

Contracts:

- :func:`list_drafts` returns the ``inbox drafts --json`` document: pending drafts newest
  first (every draft with ``include_all``), each with its contact, why it was held
  (``reason``: ``draft`` for draft mode, else the guardrail's slug), intent, confidence, the
  contact's DM window and automation state, and, once decided, the send it made.
- :func:`approve` sends the draft's text as the automation would have: a DM, or the private
  reply to the comment when the draft answers one (``comment_id`` set), through the outbox
  with tracked links and the job's workflow. :func:`edit` sends the creator's text instead
  and leaves the draft's own ``text`` untouched (the original stays in the row; the sent
  text is in the send). Both first check Instagram's rules: a refusal sends nothing and
  changes nothing (the draft stays pending). Then ONE transaction moves the draft from
  ``pending`` to ``sent`` with a conditional UPDATE and enqueues the send under a key derived
  from the draft (:func:`instaset.store.drafts.send_key`): of two approvals (or an approval
  racing an edit or a rejection) exactly one wins, the other gets an :class:`InstasetError`
  naming the draft's state, and nothing is sent twice. The command then delivers that send
  itself (a running daemon may take it first: its verdict is awaited instead), like
  ``inbox reply``.
  A send refused or failed later, at delivery (e.g. queued until after the window closed),
  leaves the draft ``sent``: the listing shows that send's state and reason (answer with
  ``inbox reply``); its key is spent, so approving again cannot send twice.
- :func:`reject` moves a pending draft to ``discarded``; nothing is sent.
- A draft that is not pending is an error naming its state; an unknown id names
  ``instaset inbox drafts``.

Choices (documented because they differ from ``inbox reply``):

- An approved draft is the automation's reply that a human checked: it is sent with
  ``sent_by="automation"`` and only inside the 24 h window. Instagram's ``HUMAN_AGENT`` tag
  (up to 7 days) covers messages a person writes, not automated ones, so between 24 h and 7
  days approval is refused with a message pointing at ``inbox edit``. An edited draft is the
  creator's own words: it is sent with ``sent_by="human"`` and, like ``inbox reply``, carries
  the ``HUMAN_AGENT`` tag between 24 h and 7 days; after 7 days both are refused.
- Neither approval nor edit pauses the automation (``inbox reply`` does): the draft was the
  automation's turn, which the creator only reviewed. Neither resumes it either: a guardrail
  hand-off paused the conversation, and that pause stays until it ends or
  ``inbox resume``. The approved send itself is not held back by that pause (the creator
  explicitly approved it): it goes out with ``before_handoff`` set, the outbox's way of
  saying "decided before the pause".
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from instaset.daemon import Runtime
from instaset.errors import InstasetError
from instaset.events import CommentEvent, EventKind, parse_stored
from instaset.inbox import automation_json, deliver_now, iso_utc, window_state
from instaset.links import track_links
from instaset.outbox import Outgoing, enqueue_sends
from instaset.rules import (
    HUMAN_AGENT_SECONDS,
    WINDOW_SECONDS,
    Clearance,
    Refusal,
    SendFacts,
    SendKind,
    check_send,
)
from instaset.store import ai as aistore
from instaset.store import drafts as store
from instaset.store import sends as sendstore
from instaset.store.db import Database

LIST_HINT = "list them with `instaset inbox drafts`"


def _label(row: sqlite3.Row) -> str:
    return f"@{row['username']}" if row["username"] else str(row["contact_id"])


def _send_json(row: sqlite3.Row) -> dict[str, Any] | None:
    if row["send_state"] is None:
        return None
    try:
        text = Outgoing.from_json(row["send_body"]).text
    except (ValueError, TypeError, KeyError):
        text = None
    return {"key": store.send_key(row["key"]), "state": row["send_state"],
            "reason": row["send_reason"], "sent_by": row["send_sent_by"], "text": text,
            # An edit is the only send made as the human (an approval's text may differ
            # from the draft's only by its tracked links).
            "edited": row["send_sent_by"] == "human",
            "message_id": row["send_message_id"]}


def draft_json(row: sqlite3.Row, now: float) -> dict[str, Any]:
    """One draft as ``inbox drafts --json`` shows it (see the module docstring)."""
    return {
        "id": int(row["id"]),
        "account_id": row["account_id"],
        "contact_id": row["contact_id"],
        "username": row["username"],
        "comment_id": row["comment_id"],
        "channel": "private_reply" if row["comment_id"] else "dm",
        "state": row["state"],
        "reason": row["reason"],
        "intent": row["intent"],
        "confidence": row["confidence"],
        "text": row["text"],
        "created_at": iso_utc(row["created_at"]),
        "updated_at": iso_utc(row["updated_at"]),
        "window": window_state(row["last_inbound_at"], now).to_json(now),
        "automation": automation_json(row["paused_until"], now),
        "send": _send_json(row),
    }


async def list_drafts(db: Database, now: float, *, include_all: bool = False,
                      limit: int = 50) -> dict[str, Any]:
    """``{"drafts": [...], "counts": {"pending": n, "sent": n, "discarded": n}}``."""
    rows = await store.list_drafts(db, include_all=include_all, limit=limit)
    counts = {"pending": 0, "sent": 0, "discarded": 0} | await store.count_drafts(db)
    return {"drafts": [draft_json(r, now) for r in rows], "counts": counts}


def _not_pending(draft_id: int, state: str | None) -> InstasetError:
    if state is None:  # deleted between the read and the write (purge)
        return InstasetError(f"no draft {draft_id} (it was just purged); {LIST_HINT}")
    done = {"sent": "it was approved (or edited) and sent already; nothing was sent again",
            "discarded": "it was rejected; nothing was sent"}.get(state, "")
    return InstasetError(f"draft {draft_id} is {state}, not pending: {done}; "
                         "see `instaset inbox drafts --all`")


async def pending_draft(db: Database, draft_id: int) -> sqlite3.Row:
    """The draft ``draft_id`` with its contact and window; an error unless it is pending."""
    row = await store.get_draft(db, draft_id)
    if row is None:
        raise InstasetError(f"no draft {draft_id}: {LIST_HINT}")
    if row["state"] != "pending":
        raise _not_pending(draft_id, str(row["state"]))
    return row


# -- approving ----------------------------------------------------------------------------------
@dataclass
class DraftOutcome:
    """``state``: sent, refused (by the rules, nothing changed; or by the rules at delivery),
    failed (Meta said no), queued (not delivered yet: a rate budget, a transient error, or a
    daemon still working on it), or discarded (rejected)."""

    draft_id: int
    label: str
    state: str
    text: str = ""
    edited: bool = False
    keys: list[str] = field(default_factory=list)
    human_agent_tag: bool = False
    reason: str | None = None
    detail: str | None = None
    message_ids: list[str] = field(default_factory=list)


async def _origin(db: Database, row: sqlite3.Row) -> tuple[str | None, float | None, bool]:
    """The workflow, comment time and live flag the ai_reply job carried (from its payload
    while the job is stored, else the comment's own event), so the send is what the job
    would have made: attributed to its workflow, a private reply checked against its 7
    days, and one to a live comment under the live budget."""
    workflow: str | None = None
    comment_at: float | None = None
    live = False
    raw = await store.job_payload(db, row["key"])
    if raw is not None:
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {}
        if isinstance(payload, dict):
            wf, at = payload.get("workflow"), payload.get("comment_at")
            workflow = wf if isinstance(wf, str) else None
            comment_at = float(at) if isinstance(at, int | float) else None
            live = payload.get("live") is True
    if row["comment_id"] and comment_at is None:
        async with db.read() as conn:
            raws = await aistore.comment_events(conn, row["account_id"], row["contact_id"])
        for envelope in raws:
            for ev in parse_stored(envelope):
                if isinstance(ev, CommentEvent) and ev.comment_id == row["comment_id"]:
                    comment_at = ev.occurred_at
                    live = ev.kind is EventKind.LIVE_COMMENT
    return workflow, comment_at, live


def _refusal_detail(draft_id: int, refusal: Refusal, facts: SendFacts, now: float) -> str:
    """The rules' words, plus, for an approval after 24 h, why HUMAN_AGENT does not apply."""
    age = None if facts.last_inbound_at is None else now - facts.last_inbound_at
    if (refusal.reason == "window_closed" and not facts.human and age is not None
            and WINDOW_SECONDS < age <= HUMAN_AGENT_SECONDS):
        return (f"{refusal.detail}. An approved AI draft is an automated reply, and the "
                "HUMAN_AGENT tag (up to 7 days) only covers what a person writes: send it "
                f"in your own words with `instaset inbox edit {draft_id} TEXT`")
    return refusal.detail


async def approve(rt: Runtime, draft_id: int, *, wait: float = 30.0,
                  poll: float = 0.2) -> DraftOutcome:
    """Send the draft's text as the automation would have. See the module docstring."""
    return await _send(rt, draft_id, None, wait=wait, poll=poll)


async def edit(rt: Runtime, draft_id: int, text: str, *, wait: float = 30.0,
               poll: float = 0.2) -> DraftOutcome:
    """Send ``text`` (the creator's words) instead of the draft's; the draft keeps its own
    text. See the module docstring."""
    text = text.strip()
    if not text:
        raise InstasetError("the edited text is empty; to send nothing, "
                            f"`instaset inbox reject {draft_id}`")
    return await _send(rt, draft_id, text, wait=wait, poll=poll)


async def _send(rt: Runtime, draft_id: int, edited: str | None, *, wait: float,
                poll: float) -> DraftOutcome:
    row = await pending_draft(rt.db, draft_id)
    label = _label(row)
    text = edited if edited is not None else str(row["text"]).strip()
    if not text:
        raise InstasetError(
            f"draft {draft_id} has no text (the AI handed {label} off without a reply): "
            f"write one with `instaset inbox edit {draft_id} TEXT`")
    human = edited is not None
    key = store.send_key(row["key"])
    comment_id: str | None = row["comment_id"] or None
    kind = SendKind.PRIVATE_REPLY if comment_id else SendKind.TEXT
    workflow, comment_at, live = await _origin(rt.db, row)
    now = rt.clock()
    ctx = await sendstore.send_context(rt.db, row["account_id"], row["contact_id"],
                                       comment_id, key)
    facts = SendFacts(
        kind=kind, human=human,
        account_state=ctx["account_state"] if ctx else "disconnected",
        last_inbound_at=ctx["last_inbound_at"] if ctx else None,
        paused_until=None,  # the creator approved it: a hand-off pause does not hold it
        comment_at=comment_at,
        private_reply_used=bool(ctx["private_reply_used"]) if ctx else False,
    )
    verdict = check_send(facts, now)
    outcome = DraftOutcome(draft_id, label, "queued", text=text, edited=human)
    if not isinstance(verdict, Clearance):
        outcome.state, outcome.reason = "refused", verdict.reason
        outcome.detail = _refusal_detail(draft_id, verdict, facts, now)
        return outcome
    outcome.human_agent_tag = verdict.human_agent_tag
    out = Outgoing(
        key=key, kind=kind, account_id=row["account_id"], contact_id=row["contact_id"],
        comment_id=comment_id, comment_at=comment_at if comment_id else None, text=text,
        sent_by="human" if human else "automation", workflow=workflow,
        live=live and bool(comment_id), before_handoff=not human,
    )
    async with rt.db.tx() as conn:
        if not await store.decide_in(conn, draft_id, "sent", now):
            raise _not_pending(draft_id, await store.state_in(conn, draft_id))
        outs = await track_links(conn, [out], base_url=rt.config.server.public_url, now=now)
        outcome.keys = await enqueue_sends(conn, outs, now)
    rt.wake.set()
    await _deliver(rt, outcome, wait, poll)
    return outcome


async def _deliver(rt: Runtime, outcome: DraftOutcome, wait: float, poll: float) -> None:
    """Deliver the outcome's sends in order (as ``inbox reply`` does) and fill in the result."""
    done = await deliver_now(rt, outcome.keys, wait=wait, poll=poll)
    outcome.state, outcome.reason, outcome.detail = done.state, done.reason, done.detail
    outcome.message_ids.extend(done.message_ids)


async def reject(db: Database, draft_id: int, now: float) -> DraftOutcome:
    """Discard a pending draft; nothing is sent."""
    row = await pending_draft(db, draft_id)
    async with db.tx() as conn:
        if not await store.decide_in(conn, draft_id, "discarded", now):
            raise _not_pending(draft_id, await store.state_in(conn, draft_id))
    return DraftOutcome(draft_id, _label(row), "discarded", text=str(row["text"]))

