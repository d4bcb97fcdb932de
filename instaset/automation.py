"""The glue between the pure engine and the durable world.

:class:`WorkflowAutomation` loads a conversation's state, calls :func:`engine.decide`, stores
the new state and turns the decision's actions into durable work inside the event's
transaction: sends (one ordered chain per decision, so "hi" never overtakes "welcome"),
notifications, continuations after a ``delay`` and AI replies. Keys derive from the event's
dedupe key and the action's position, so a reprocessed event enqueues nothing new.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import aiosqlite

from instaset.engine.actions import (
    GenerateAIReply,
    HandOff,
    Notify,
    OfferBooking,
    PrivateReply,
    PublicReply,
    Schedule,
    ScoreLead,
    SendButtons,
    SendMedia,
    SendTemplate,
    SendText,
    SetField,
    SetStage,
    TypingOn,
)
from instaset.engine.decide import Decision, decide, resume
from instaset.engine.model import Workflow
from instaset.engine.settings import EngineSettings
from instaset.engine.state import ConversationState
from instaset.events import CommentEvent, Event, EventKind, MessageEvent, PostbackEvent
from instaset.links import track_links
from instaset.notify import notify_job
from instaset.outbox import Outgoing, enqueue_sends
from instaset.queue import COMPLETED, NewJob, Outcome, RetryLater, enqueue_in
from instaset.refusals import TOLD, automation_refusal_notice, named
from instaset.rules import SendKind
from instaset.store import history, unsend
from instaset.store import sends as sendstore
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in

log = logging.getLogger("instaset.worker")

OfferBookingHook = Callable[
    [aiosqlite.Connection, str, str, str, str | None, str | None, float],
    Awaitable[list[Outgoing]],
]


def load_state(row: Any, account_id: str, contact_id: str) -> ConversationState:
    """The engine state of a conversation row; the row's columns are authoritative for the
    facts other subsystems also change (window, pause, username)."""
    raw = row["state"] if row is not None else "{}"
    data = json.loads(raw) if raw else {}
    state = (
        ConversationState.from_dict(data) if data.get("account_id")
        else ConversationState(account_id=account_id, contact_id=contact_id)
    )
    if row is not None:
        state = replace(
            state, last_inbound_at=row["last_inbound_at"], paused_until=row["paused_until"],
            username=row["username"] or state.username, lead_stage=row["lead_stage"],
        )
    return state


def _template_json(action: SendButtons | SendTemplate) -> str:
    if isinstance(action, SendButtons):
        buttons = [_button(b.title, b.url, b.payload) for b in action.buttons]
        return json.dumps({"type": "button", "text": action.text, "buttons": buttons})
    elements = []
    for card in action.elements:
        el: dict[str, Any] = {"title": card.title}
        if card.subtitle:
            el["subtitle"] = card.subtitle
        if card.image_url:
            el["image_url"] = card.image_url
        if card.url:
            el["default_action"] = {"type": "web_url", "url": card.url}
        if card.buttons:
            el["buttons"] = [_button(b.title, b.url, b.payload) for b in card.buttons]
        elements.append(el)
    return json.dumps({"type": "generic", "elements": elements})


def _button(title: str, url: str | None, payload: str | None) -> dict[str, str]:
    if url:
        return {"type": "web_url", "url": url, "title": title}
    return {"type": "postback", "title": title, "payload": payload or title}


def _refusal_notices(decision: Decision, now: float) -> list[NewJob]:
    """The creator is told of the messages the engine refused itself (stored as refused
    sends by :func:`_refused_sends`, which the outbox never sees), as of the outbox's
    refusals: a step after the 24 h window (a delayed one), once
    per contact, workflow and day; a private reply to a comment over 7 days old (processed
    late), once per contact, reason and day, with the key the outbox's notice has."""
    st, wf = decision.state, decision.workflow
    if wf is None:
        return []
    jobs: list[NewJob] = []
    closed = [r for r in decision.refused if r.reason == "window_closed"]
    if closed:
        jobs.append(notify_job(
            f"engine-refused:{st.account_id}:{st.contact_id}:{wf}:{int(now // 86400)}",
            st.account_id, st.contact_id, "refused",
            f"Workflow {wf} could not message {named(st.contact_id, st.username)}: "
            + "; ".join(f"refused {r.what}: {r.detail}" for r in closed), now))
    told: dict[str, str] = {}
    for r in decision.refused:
        if r.reason in TOLD and r.reason != "window_closed":
            told.setdefault(r.reason, r.detail)
    jobs.extend(automation_refusal_notice(st.account_id, st.contact_id, wf, reason, detail, now,
                                          username=st.username)
                for reason, detail in told.items())
    return jobs


MessageAction = SendText | SendMedia | SendButtons | SendTemplate | PrivateReply


def _message_out(action: MessageAction, key: str, base: dict[str, Any],
                 comment_at: float | None, live: bool) -> Outgoing:
    """The send of one message ``action`` of a decision (``base``: account, contact and
    workflow)."""
    match action:
        case SendText():
            return Outgoing(key=key, kind=SendKind.TEXT, text=action.text,
                            quick_replies=tuple((q.title, q.payload)
                                                for q in action.quick_replies), **base)
        case SendMedia():
            return Outgoing(key=key, kind=SendKind.MEDIA, media_type=action.kind,
                            media_url=action.url, **base)
        case SendButtons() | SendTemplate():
            return Outgoing(key=key, kind=SendKind.TEMPLATE, template=_template_json(action),
                            **base)
        case PrivateReply():
            return Outgoing(key=key, kind=SendKind.PRIVATE_REPLY, comment_id=action.comment_id,
                            comment_at=comment_at, text=action.text, live=live, **base)


def _refused_sends(decision: Decision, key: str, comment_at: float | None, live: bool,
                   ) -> list[tuple[Outgoing, str, str]]:
    """The messages the engine refused itself, as sends refused for their reason and
    words (keyed
    after the decision's actions, ``send:{key}:{n}``): what the outbox's refusal of the same
    message would leave, so ``stats`` (refused, by reason, per workflow and media) and the
    thread count them from the one table of sends. An AI reply or a booking offer refused
    before it was written is a send without text, with the step it stands for
    (``Outgoing.step``)."""
    st = decision.state
    base: dict[str, Any] = dict(account_id=st.account_id, contact_id=st.contact_id,
                                workflow=decision.workflow)
    out: list[tuple[Outgoing, str, str]] = []
    for i, r in enumerate(decision.refused):
        k = f"send:{key}:{len(decision.actions) + i}"
        match r.action:
            case SendText() | SendMedia() | SendButtons() | SendTemplate() | PrivateReply():
                send = _message_out(r.action, k, base, comment_at, live)
            case GenerateAIReply(comment_id=cid) if cid:
                send = Outgoing(key=k, kind=SendKind.PRIVATE_REPLY, comment_id=cid,
                                comment_at=comment_at, live=live, step="ai_reply", **base)
            case GenerateAIReply():
                send = Outgoing(key=k, kind=SendKind.TEXT, step="ai_reply", **base)
            case OfferBooking():
                send = Outgoing(key=k, kind=SendKind.TEXT, step="offer_booking", **base)
            case _:
                continue
        out.append((send, r.reason, r.detail))
    return out


class WorkflowAutomation:
    def __init__(
        self,
        db: Database,
        workflows: Sequence[Workflow],
        settings: EngineSettings,
        *,
        clock: Callable[[], float],
        on_decision: Callable[[Decision], None] | None = None,
        link_base: str | None = None,
    ) -> None:
        self.db = db
        self.workflows = list(workflows)
        self.settings = settings
        self.clock = clock
        self.on_decision = on_decision
        # Links in automated replies go through the daemon's /l/{code} redirect (clicks are
        # counted) when the daemon has a public URL; without one they go out as written.
        self.link_base = link_base
        # Set by the AI/booking feature: the message offering free slots, built inside the
        # decision's transaction so it keeps its place in the chain of sends.
        self.offer_booking: OfferBookingHook | None = None

    async def plan(
        self, conn: aiosqlite.Connection, event: Event, *, is_new_contact: bool, now: float
    ) -> list[NewJob]:
        contact = event.contact_id
        if contact is None or contact == event.account_id:
            return []
        row = await history.get_conversation(conn, event.account_id, contact)
        state = load_state(row, event.account_id, contact)
        # Only a comment takes public replies: their variants go in turn (the count is read
        # in this transaction, after the previous comment's sends were committed).
        turns = (await sendstore.public_reply_turns(conn, event.account_id)
                 if isinstance(event, CommentEvent) else None)
        decision = decide(event, state, self.workflows, self.settings, now, turns=turns)
        comment_at = event.occurred_at if isinstance(event, CommentEvent) else None
        mid = event.mid if isinstance(event, MessageEvent | PostbackEvent) else None
        return await self._persist(conn, decision, event.dedupe_key, now, comment_at, mid,
                                   live=event.kind is EventKind.LIVE_COMMENT)

    async def _persist(
        self, conn: aiosqlite.Connection, decision: Decision, key: str, now: float,
        comment_at: float | None, mid: str | None = None, *, live: bool = False,
        ai_base: str | None = None,
    ) -> list[NewJob]:
        """``mid``: the message that started the workflow (the anchor of an ``ai_reply``,
        see :meth:`instaset.ai.feature.AIReplies.handle`; a continuation after a ``delay``
        carries it on). ``live``: the decision answers a live comment (its private reply,
        now or after a delay or an AI answer, takes the live budget: see
        :class:`Outgoing`). ``ai_base``: what an ``ai_reply`` job's key is built on
        (``ai:{ai_base}:{n}``; ``key`` when None). A continuation's is the event's dedupe
        key and the position of each ``delay`` on the way (``{event}:{n}:{m}``), so its
        reply has a key of that event's replies, as the check of a later message's reply
        (:data:`instaset.store.ai._ANSWERED_LATER`) finds them; continuations queued before
        it existed keep ``ai:resume:...`` keys."""
        ai_base = key if ai_base is None else ai_base
        st = decision.state
        await history.update_conversation(
            conn, st.account_id, st.contact_id, now, state=st.to_json(),
            paused_until=st.paused_until,
        )
        if decision.workflow:
            log.info("%s -> %s: %s", st.contact_id, decision.workflow, "; ".join(decision.trace))
        if self.on_decision is not None:
            self.on_decision(decision)
        outs: list[Outgoing] = []
        jobs: list[NewJob] = []
        jobs.extend(_refusal_notices(decision, now))
        if decision.workflow and decision.refused:
            await sendstore.insert_refused(conn, [
                (o.key, o.account_id, o.contact_id, o.comment_id, str(o.kind), o.to_json(),
                 o.sent_by, o.workflow, reason, detail, now)
                for o, reason, detail in _refused_sends(decision, key, comment_at, live)])
        public = sum(isinstance(a, PublicReply) for a in decision.actions)
        if public and decision.workflow:
            # The next comment's public reply takes the next variant (decide(turns=...)).
            await sendstore.count_public_replies(conn, st.account_id, decision.workflow,
                                                 public)
        base = dict(account_id=st.account_id, contact_id=st.contact_id, workflow=decision.workflow)
        for n, action in enumerate(decision.actions):
            k = f"{key}:{n}"
            match action:
                case SendText() | SendMedia() | SendButtons() | SendTemplate() | PrivateReply():
                    outs.append(_message_out(action, f"send:{k}", base, comment_at, live))
                case PublicReply():
                    outs.append(Outgoing(key=f"send:{k}", kind=SendKind.PUBLIC_REPLY,
                                         comment_id=action.comment_id, text=action.text,
                                         after_private=action.after_private,
                                         **base))  # type: ignore[arg-type]
                case TypingOn():
                    outs.append(Outgoing(key=f"send:{k}", kind=SendKind.SENDER_ACTION,
                                         action="typing_on", **base))  # type: ignore[arg-type]
                case Notify():
                    # A handoff's notice (the engine emits it right after the HandOff) has
                    # its own kind, as an AI hand-off's: a receiver can route handoffs.
                    handoff = n > 0 and isinstance(decision.actions[n - 1], HandOff)
                    jobs.append(notify_job(k, st.account_id, st.contact_id,
                                           "handoff" if handoff else "notify", action.text,
                                           now))
                case HandOff():
                    # The engine also emits a Notify for the creator; the pause is in the
                    # new state. Messages decided before the handoff still go out.
                    outs = [replace(o, before_handoff=True) for o in outs]
                case Schedule():
                    jobs.append(NewJob("resume_flow", f"resume:{k}", {
                        "account_id": st.account_id, "contact_id": st.contact_id,
                        "workflow": action.workflow, "step": action.step,
                        "comment_id": action.comment_id,
                        "comment_at": (comment_at if action.comment_at is None
                                       else action.comment_at),
                        "public_ok": action.public_ok, "text": action.text, "live": live,
                        "mid": mid, "ai_base": f"{ai_base}:{n}",
                        "private_used": action.private_used,
                        "private_made": action.private_made,
                        "private_missed": action.private_missed,
                    }, run_at=action.run_at))
                case GenerateAIReply():
                    jobs.append(NewJob("ai_reply", f"ai:{ai_base}:{n}", {
                        "account_id": st.account_id, "contact_id": st.contact_id,
                        "mode": action.mode, "comment_id": action.comment_id,
                        "comment_at": comment_at, "workflow": decision.workflow, "live": live,
                        "mid": None if action.comment_id else mid,
                    }, run_at=now, max_attempts=4, at_once=True))  # the reply path
                case OfferBooking():
                    if self.offer_booking is not None:
                        offer = await self.offer_booking(
                            conn, st.account_id, st.contact_id, f"send:{k}", action.text,
                            decision.workflow, now)
                        outs.extend(offer)
                        if not offer:  # another hook (the booking desk always answers)
                            who = f"@{st.username}" if st.username else st.contact_id
                            jobs.append(notify_job(k, st.account_id, st.contact_id, "booking",
                                                   f"no free booking slot to offer {who}", now))
                case ScoreLead() | SetStage():
                    points = action.points if isinstance(action, ScoreLead) else 0
                    reason = action.reason if isinstance(action, ScoreLead) else ""
                    jobs.append(NewJob("lead_score", f"lead:{k}", {
                        "account_id": st.account_id, "contact_id": st.contact_id,
                        "points": points, "reason": reason or f"workflow {decision.workflow}",
                        "workflow": decision.workflow}, run_at=now))
                case SetField():
                    # Already in the new state; where its value came from is kept beside it
                    # (the contact's unsend of that message takes the value back).
                    if action.captured and mid is not None:
                        await unsend.record_capture(conn, st.account_id, st.contact_id,
                                                    action.name, mid, now)
                    else:
                        await unsend.forget_sources(conn, st.account_id, st.contact_id,
                                                    (action.name,))
                case _:
                    pass  # tags, stage: already in the new state
        if outs:
            outs = await track_links(conn, outs, base_url=self.link_base, now=now)
            await enqueue_sends(conn, outs, now)
        return jobs

    async def resume_flow(self, job: Job) -> Outcome | None:
        """The ``resume_flow`` job: continue a workflow after its ``delay``. The decision
        commits together with the job's completion: a rerun (after kill -9, or a job timeout
        that fires while the COMMIT runs) finds the job done and decides nothing again, where
        a second decision with a later clock could emit different actions under new keys."""
        p = job.payload
        acct, contact = str(p["account_id"]), str(p["contact_id"])
        now = self.clock()
        async with self.db.tx() as conn:
            if not await history.account_live(conn, acct):
                # Disconnected (or deauthorized) since the delay began: the workflow stops.
                await complete_in(conn, job, now)
                return COMPLETED
            row = await history.get_conversation(conn, acct, contact)
            state = load_state(row, acct, contact)
            comment_id = p.get("comment_id")
            turns = (await sendstore.public_reply_turns(conn, acct)
                     if comment_id is not None else None)
            comment_at = p.get("comment_at")
            # The message answered, for {text}; not one the contact unsent during the delay
            # (the unsend also took it out of this payload: see instaset.unsent_copies).
            text = p.get("text") if isinstance(p.get("text"), str) else None
            mid = p.get("mid")
            if text is not None and isinstance(mid, str) and await unsend.is_unsent(
                    conn, mid, acct, contact):
                text = None
            decision = resume(state, self.workflows, self.settings, str(p["workflow"]),
                              int(p["step"]), now, comment_id=comment_id,
                              comment_at=float(comment_at) if comment_at is not None else None,
                              public_ok=bool(p.get("public_ok")),
                              text=text, turns=turns,
                              private_used=(p["private_used"] if isinstance(
                                  p.get("private_used"), bool) else None),
                              private_made=p.get("private_made") is True,
                              private_missed=p.get("private_missed") is True)
            # The anchor and the key base the delay carried (absent in a continuation
            # queued before they existed: its ai_reply then answers the newest messages).
            ai_base = p.get("ai_base")
            jobs = await self._persist(
                conn, decision, f"resume:{job.key}", now, p.get("comment_at"),
                mid if isinstance(mid, str) else None, live=p.get("live") is True,
                ai_base=ai_base if isinstance(ai_base, str) else None)
            if jobs:
                await enqueue_in(conn, jobs, now)
            if not await complete_in(conn, job, now):
                # Not ours any more (its lease ran out and another claim took it): roll back.
                raise RetryLater(0.0, "resume_flow job no longer leased here", count_attempt=False)
        return COMPLETED
