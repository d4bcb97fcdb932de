"""The AI feature: the ``ai_reply`` job, lead scoring jobs, booking on tap, and ``install``.

Contract of the ``ai_reply`` job (payload ``account_id``, ``contact_id``, ``mode``,
``comment_id``, ``comment_at``, ``workflow``, and ``mid``: the DM or tap it answers, after a
``delay`` too (the message that started the workflow); absent for comments, and in jobs, or
continuations after a ``delay``, queued before it existed):

0. Does nothing (no call, no send) when a later message of the thread than ``mid`` has its
   reply already, or an ai_reply of it still to run (see :meth:`AIReplies.handle`).
1. Reads the recent conversation, the message to answer (the comment's text for a comment),
   and the creator's own past replies most similar to it (local retrieval); builds the prompt.
2. Calls Gemini (or the offline responder when no key is set). A slow call first shows the
   typing indicator (DMs in ``auto`` mode). Each call is recorded (tokens, latency, outcome):
   in the transaction that finishes the job, or on its own when the job is to be retried.
3. Applies the guardrails, then per mode: ``auto`` enqueues the reply (a private reply for a
   comment; free booking slots after it when the model asked to offer them); ``draft``
   stores it for approval; a guardrail hand-off pauses the conversation, stores the draft and
   notifies the creator. Extracted lead facts are stored and the lead rescored.
4. Failures: a 429 defers the job by its ``retryDelay``; 5xx, timeouts and malformed answers
   retry with the queue's backoff; after the last try (``min(job, ai.max_attempts)``) or on a
   final error, ``ai.fallback_message`` is sent (auto mode; once per contact and day, the
   creator told once too: see :meth:`AIReplies._give_up`) or the conversation handed off;
   in ``draft`` mode one empty draft and one notice per contact and day.

Every effect is keyed (by the job's key; the fallback and its notice by contact and day)
and commits with the job's completion, so a rerun sends nothing twice. Nothing here runs
inside ingest: the pipeline only enqueues jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import aiohttp
import aiosqlite

from instaset.ai.answer import Answer
from instaset.ai.context import HISTORY_TURNS, Context, load_context, load_reply_context
from instaset.ai.gemini import GeminiError, GeminiResponder
from instaset.ai.guardrails import Verdict, check_reply, grounded, quoted_from
from instaset.ai.offline import OfflineResponder
from instaset.ai.plaintext import plain_text
from instaset.ai.prompt import DEFAULT_LEAD_FACTS, Example, PromptInput, build_prompt
from instaset.ai.scoring import LeadScoring, rescore_after, rescore_in
from instaset.automation import WorkflowAutomation
from instaset.booking import BookingDesk, parse_payload
from instaset.config import Config, LeadsConfig
from instaset.events import (
    CommentEvent,
    Event,
    EventKind,
    MessageDeletedEvent,
    MessageEvent,
    PostbackEvent,
)
from instaset.leads import Msg
from instaset.links import track_links
from instaset.notify import notify_job
from instaset.outbox import Outgoing, enqueue_sends
from instaset.pipeline import Automation
from instaset.queue import COMPLETED, NewJob, Outcome, RetryLater, backoff_delay, enqueue_in
from instaset.rules import SendKind
from instaset.store import ai as aistore
from instaset.store import history
from instaset.store.ai import CallRecord
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in, on_their_own

if TYPE_CHECKING:
    from instaset.daemon import Runtime

log = logging.getLogger("instaset.ai")

MAX_AI_RETRY_WAIT = 600.0
"""The longest wait for a rate-limited Gemini call before the fallback (or handoff) instead:
a reply ten minutes late is already a slow DM."""


def lead_fact_names(config: Config) -> tuple[str, ...]:
    """The facts the model is asked to extract: the defaults plus every ``ai_fact`` rule."""
    names = list(DEFAULT_LEAD_FACTS)
    for rule in config.leads.rules:
        if rule.ai_fact and rule.ai_fact not in names:
            names.append(rule.ai_fact)
    return tuple(names)


class AIReplies:
    """The ``ai_reply`` job handler (see the module docstring)."""

    def __init__(
        self, db: Database, config: Config, *, clock: Callable[[], float],
        desk: BookingDesk, responder: GeminiResponder | None,
        offline: OfflineResponder | None = None, wake: asyncio.Event | None = None,
        typing_after: float = 2.0,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.desk = desk
        self.responder = responder
        self.offline = offline or OfflineResponder()
        self.wake = wake
        self.typing_after = typing_after

    # -- the job ---------------------------------------------------------------------------
    async def handle(self, job: Job) -> Outcome | None:
        """Returns ``COMPLETED`` when the job's completion committed with its effects (the
        worker then writes nothing more), None when the worker is to complete it.

        The job answers the message that queued it (``mid``, its anchor): the model sees
        the conversation up to the anchor. It does nothing, before the call and again in
        the transaction that would send, when a message stored after the anchor has an AI
        reply (sent, drafted or handed off) or an ai_reply of it still to run: that reply
        reads the anchor too, so several quick messages get one answer, from the last
        one's job. Without this, a reply deferred by a 429, a 5xx back-off or a backlog
        answered again what the later reply answered. A workflow's canned reply to a later
        message does not stop it (a question, then the keyword "guide": the canned guide
        answers the keyword, the AI still answers the question; cut at the anchor, it does
        not answer "guide" again). After a ``delay`` the anchor is the message that
        started the workflow, with the same checks: a message the contact unsent during
        the delay is not answered (before, the reply answered whatever was newest, or, with
        nothing left, handed the contact off for "no text"); each message that started a
        delayed reply gets one answer, up to itself (before, two messages during the delay
        got two answers to the same newest turns); and a later message's own reply, sooner
        or delayed, stops it. A job without ``mid`` (queued before it existed, a comment's)
        answers the newest messages, as before.
        """
        p = job.payload
        acct, contact = str(p["account_id"]), str(p["contact_id"])
        mode = str(p.get("mode") or "auto")
        comment_id = p.get("comment_id") or None
        if mode == "off":
            return None
        ctx = await load_reply_context(self.db, job.key, acct, contact, comment_id,
                                       past_replies=self.config.ai.past_replies,
                                       anchor=self._anchor(job))
        if ctx is None:  # answered already (a rerun, or by a later reply), the conversation
            return None  # is gone, or the account was disconnected since the job was queued
        if mode == "auto" and ctx.paused_until is not None and ctx.paused_until > self.clock():
            log.info("ai_reply for %s skipped: a human has the conversation", contact)
            return None
        inp = PromptInput(
            persona=self.config.ai.persona, facts=tuple(self.config.ai.facts),
            examples=tuple(Example(e.message, e.reply) for e in self.config.ai.examples),
            past_replies=ctx.past_replies, conversation=ctx.turns, username=ctx.username,
            is_comment=comment_id is not None, lead_facts=lead_fact_names(self.config),
            booking=self.config.booking.enabled and comment_id is None,
        )
        if not inp.incoming.strip():
            return await self._finish(job, mode, ctx, inp, None, Verdict(
                False, "no_text", "the message has no text to answer"), None)
        answer, call = await self._call(job, inp, typing=mode == "auto" and comment_id is None)
        if isinstance(answer, GeminiError):
            exc = answer
            last = job.attempts >= min(job.max_attempts, self.config.ai.max_attempts)
            if exc.retryable and not last:
                # Nothing else commits now (the queue reschedules the job): a write of its own.
                await aistore.save_call(self.db, call)
                if exc.retry_after is not None:
                    # Google's retryDelay, but never sooner than our own backoff ("0s" is
                    # sent too), and not so late that the answer is pointless: then the
                    # fallback or the handoff now, while the window is still open.
                    w = self.config.worker
                    delay = max(exc.retry_after, backoff_delay(
                        job.attempts, base=w.backoff_base, cap=w.backoff_cap))
                    if delay <= MAX_AI_RETRY_WAIT:
                        log.info("ai_reply %s: %s (try %d); trying again in %.0f s",
                                 job.key, exc.outcome, job.attempts, delay)
                        raise RetryLater(delay, str(exc)) from None
                    return await self._give_up(job, mode, ctx, inp, exc, call)
                raise exc
            return await self._give_up(job, mode, ctx, inp, exc, call)
        # Instagram shows no Markdown or HTML: what the contact reads is the plain text.
        answer = replace(answer, reply=plain_text(answer.reply))
        verdict = check_reply(answer, inp.incoming, inp.facts, comment=comment_id is not None)
        return await self._finish(job, mode, ctx, inp, answer, verdict, call)

    @staticmethod
    def _anchor(job: Job) -> str | None:
        """The mid of the message ``job`` answers (None: a comment, or an older job)."""
        mid = job.payload.get("mid")
        return str(mid) if mid and not job.payload.get("comment_id") else None

    async def _answered(self, conn: aiosqlite.Connection, job: Job) -> bool:
        """Whether the job left its effects already, or a later reply answers its message
        (see :meth:`handle`), read in the transaction that would add the effects."""
        anchor = self._anchor(job)
        return await aistore.already_answered(conn, job.key) or (
            anchor is not None and await aistore.answered_later(conn, anchor))

    # -- calling the model -----------------------------------------------------------------
    async def _call(self, job: Job, inp: PromptInput, *, typing: bool
                    ) -> tuple[Answer | GeminiError, CallRecord]:
        """The answer, or the model's failure, and the call's record (which the caller
        commits with the job's effects: one commit per job, not two)."""
        p = job.payload
        started = time.perf_counter()
        if self.responder is None:
            answer = self.offline.answer(inp)
            return answer, self._record(job, "offline", None, "ok", answer, None, started)
        task = asyncio.ensure_future(self.responder.answer(build_prompt(inp), booking=inp.booking))
        try:
            if typing:
                done, _pending = await asyncio.wait({task}, timeout=self.typing_after)
                if not done:
                    await self._typing(job, str(p["account_id"]), str(p["contact_id"]))
            answer = await task
        except GeminiError as exc:
            return exc, self._record(job, "gemini", self.responder.model, exc.outcome, None,
                                     exc, started)
        finally:
            if not task.done():
                task.cancel()
        return answer, self._record(job, "gemini", self.responder.model, "ok", answer, None,
                                    started)

    def _record(self, job: Job, backend: str, model: str | None, outcome: str,
                answer: Answer | None, exc: GeminiError | None, started: float) -> CallRecord:
        usage = answer.usage if answer is not None else (exc.usage if exc else None)
        return CallRecord(
            job_key=job.key, attempt=job.attempts, account_id=str(job.payload["account_id"]),
            contact_id=str(job.payload["contact_id"]), backend=backend, model=model,
            outcome=outcome, prompt_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=str(exc)[:500] if exc else None, created_at=self.clock(),
        )

    async def _typing(self, job: Job, acct: str, contact: str) -> None:
        """Show "typing..." while a slow model call runs (its own send, out at once)."""
        now = self.clock()
        # Not after this job (it is still waiting for the model): the queue sends it now.
        with on_their_own():
            async with self.db.tx() as conn:
                await enqueue_sends(conn, [Outgoing(
                    key=f"send:{job.key}:typing", kind=SendKind.SENDER_ACTION,
                    account_id=acct, contact_id=contact, action="typing_on")], now)
        if self.wake is not None:
            self.wake.set()

    # -- acting on the answer --------------------------------------------------------------
    def _reply_out(self, job: Job, key: str, text: str) -> Outgoing:
        p = job.payload
        comment_id = p.get("comment_id") or None
        return Outgoing(
            key=key, kind=SendKind.PRIVATE_REPLY if comment_id else SendKind.TEXT,
            account_id=str(p["account_id"]), contact_id=str(p["contact_id"]),
            comment_id=comment_id, comment_at=p.get("comment_at") if comment_id else None,
            text=text, workflow=p.get("workflow"),
            live=bool(comment_id) and p.get("live") is True,  # a live comment's reply
        )

    @staticmethod
    async def _still_said(conn: aiosqlite.Connection, job: Job, inp: PromptInput
                          ) -> list[tuple[str, str | None]]:
        """The contact's words the model saw that are still theirs now, each with the mid of
        its message (None: the comment answered): a message unsent while the model
        answered is no evidence (its words would come back in a lead fact). Read in the
        transaction that stores the facts."""
        p = job.payload
        rows = await aistore.recent_texts(conn, str(p["account_id"]), str(p["contact_id"]),
                                          HISTORY_TURNS)
        # The newest message with a text wins (see quoted_from).
        present = {r["text"]: r["mid"] for r in rows if r["direction"] == "in"}
        comment = inp.conversation[-1].text if p.get("comment_id") else None
        return [(t.text, present.get(t.text)) for t in inp.conversation
                if t.role == "contact" and (t.text in present or t.text == comment)]

    async def _finish(self, job: Job, mode: str, ctx: Context, inp: PromptInput,
                      answer: Answer | None, verdict: Verdict, call: CallRecord | None
                      ) -> Outcome:
        """Commit the answer's effects with the job's completion (and the call's record).
        A relaxed commit (no fsync, see :mod:`instaset.store.db`): lost only to a power
        loss, and then with the job's completion, so the job runs again and re-derives them;
        nothing leaves the machine before a durable commit (a send's ``in_flight`` mark)
        has made this one durable too."""
        p = job.payload
        acct, contact = str(p["account_id"]), str(p["contact_id"])
        now = self.clock()
        text = answer.reply if answer is not None else ""
        async with self.db.tx(relaxed=True) as conn:
            if call is not None:
                await aistore.insert_call(conn, call)
            if await self._answered(conn, job):
                await complete_in(conn, job, now)
                return COMPLETED
            jobs: list[NewJob] = []
            said = (await self._still_said(conn, job, inp)
                    if answer and answer.lead_facts else [])
            facts = grounded(answer.lead_facts, [t for t, _mid in said]
                             ) if answer and answer.lead_facts else ()
            if facts:
                for i, fact in enumerate(facts):
                    await aistore.add_lead_fact(
                        conn, key=f"{job.key}:fact:{i}", account_id=acct, contact_id=contact,
                        source="ai", name=fact.name, value=fact.value, evidence=fact.evidence,
                        points=None, now=now,
                        mid=quoted_from(fact.evidence, said, p.get("mid")))
                _score, more = await rescore_in(conn, self.config.leads, acct, contact, now)
                jobs += more
            outs: list[Outgoing] = []
            if mode == "draft":
                await aistore.insert_draft(
                    conn, key=job.key, account_id=acct, contact_id=contact,
                    comment_id=p.get("comment_id"), text=text,
                    intent=answer.intent if answer else None,
                    confidence=answer.confidence if answer else None,
                    reason="draft" if verdict.send else str(verdict.reason), now=now)
                if not verdict.send:
                    jobs.append(self._notify(job, ctx, inp, "draft", verdict.detail, now))
            elif verdict.send and answer is not None:
                if text:
                    outs.append(self._reply_out(job, f"send:{job.key}", text))
                if answer.offer_booking and inp.booking:
                    outs += await self.desk.offer_in(conn, acct, contact, f"send:{job.key}:slots",
                                                     None, p.get("workflow"), now)
                if not outs:
                    verdict = Verdict(False, "no_slots", "no free booking slot to offer")
            if mode != "draft" and not outs:
                await self._handoff_in(conn, job, ctx, inp, answer, verdict, now)
                jobs.append(self._notify(job, ctx, inp, "handoff", verdict.detail, now))
            if outs:
                outs = await track_links(conn, outs, base_url=self.config.server.public_url,
                                         now=now)
                await enqueue_sends(conn, outs, now)
            if jobs:
                await enqueue_in(conn, jobs, now)
            await complete_in(conn, job, now)
        if outs and self.wake is not None:
            self.wake.set()
        return COMPLETED

    async def _handoff_in(self, conn: aiosqlite.Connection, job: Job, ctx: Context,
                          inp: PromptInput, answer: Answer | None, verdict: Verdict,
                          now: float) -> None:
        p = job.payload
        acct, contact = str(p["account_id"]), str(p["contact_id"])
        pause = self.config.handoff.pause_for.total_seconds()
        await history.update_conversation(conn, acct, contact, now, pause_at_least=now + pause)
        await aistore.insert_draft(
            conn, key=job.key, account_id=acct, contact_id=contact,
            comment_id=p.get("comment_id"), text=answer.reply if answer else "",
            intent=answer.intent if answer else None,
            confidence=answer.confidence if answer else None,
            reason=str(verdict.reason), now=now)
        log.info("ai_reply for %s handed off: %s", contact, verdict.reason)

    def _notify(self, job: Job, ctx: Context, inp: PromptInput, kind: str, detail: str,
                now: float, key: str | None = None) -> NewJob:
        """The creator's notification, keyed by the job's key unless ``key`` is given."""
        p = job.payload
        who = f"@{ctx.username}" if ctx.username else str(p["contact_id"])
        said = inp.incoming.strip().replace("\n", " ")[:120]
        what = "a draft reply is waiting" if kind == "draft" else "needs you"
        return notify_job(key or job.key, str(p["account_id"]), str(p["contact_id"]), kind,
                          f'{who} {what} ({detail}): "{said}"', now)

    async def _give_up(self, job: Job, mode: str, ctx: Context, inp: PromptInput,
                       exc: GeminiError, call: CallRecord) -> Outcome:
        """The AI cannot answer: after the last try, or at once on a final error (a 429
        whose ``retryDelay`` is past :data:`MAX_AI_RETRY_WAIT`: a quota gone for hours).

        In auto mode without ``ai.fallback_message``: the hand-off of :meth:`_finish` (the
        conversation paused, which stops the next messages' replies too; a draft; a
        notification). With it, in auto mode: the fallback goes to the contact at most once
        a day, and the creator is told once per contact and day (the send's key
        ``send:ai-fallback:{account}:{contact}:{day}:{job}`` names the comment answered, for
        ``stats``; none goes under a day's prefix taken:
        :func:`instaset.store.ai.fallback_given`; the notice's key is
        ``ai-failed:{account}:{contact}:{day}``, like the outbox's refusal notices). Before,
        each message of an outage got the same line and the creator one push for each. A
        failure after the fallback, the same day, sends nothing and tells nobody again.

        In draft mode, the same once per contact and day: one empty draft (key
        ``ai-failed:{account}:{contact}:{day}``, for ``inbox edit``; it answers the first
        failed message, a comment's private reply if that was one) and one "draft waiting"
        notice (``ai-failed-draft:...``: a contact whose workflows use both modes gets both
        notices in one outage day). Draft mode pauses nothing, so before, each message of an
        outage made a draft and a notice of its own. Keyed by the day, not the job, the
        draft's approval cannot find the job's workflow (its send is attributed to none).

        The conversation is not paused after the fallback, as it is after a hand-off:

        - a pause stops all automation for the contact for ``handoff.pause_for`` (12 h by
          default): the keyword workflows that need no AI (a guide link, a booking offer)
          would go silent because Gemini failed once, and a 5xx outage of minutes would
          silence the contact for half a day;
        - unpaused, the contact's next message after Gemini is back gets an AI answer, with
          the messages of the outage in its turns: what the fallback ("I'll get back to
          you") promised;
        - the creator is told; answering in the app pauses automation anyway, as any reply
          of theirs does.

        The cost: while the outage lasts, each message of the contact still costs a try at
        Gemini (one quick 429, or a 5xx's tries), and the ones after the fallback get no
        answer until it ends; the one notification covers them."""
        fallback = self.config.ai.fallback_message
        log.warning("ai_reply %s gave up after try %d: %s", job.key, job.attempts, exc)
        if mode != "draft" and not fallback:
            return await self._finish(
                job, mode, ctx, inp, None,
                Verdict(False, f"ai_{exc.outcome}", f"the AI failed: {exc}"), call)
        p = job.payload
        acct, contact = str(p["account_id"]), str(p["contact_id"])
        now = self.clock()
        day = f"{acct}:{contact}:{int(now // 86400)}"
        day_key = f"ai-failed:{day}"
        async with self.db.tx(relaxed=True) as conn:  # as in _finish
            await aistore.insert_call(conn, call)
            if await self._answered(conn, job):
                await complete_in(conn, job, now)
                return COMPLETED
            if mode != "draft" and fallback:
                # A fallback under the day's prefix (an earlier failure today): none again.
                # The job's key names the comment ('comment:{id}'): stats find its media by it.
                today = f"send:ai-fallback:{day}"
                if not await aistore.fallback_given(conn, today):
                    await enqueue_sends(conn, [self._reply_out(
                        job, f"{today}:{job.key}", fallback)], now)
                note = self._notify(
                    job, ctx, inp, "handoff",
                    f"the AI failed ({exc.outcome}); the fallback message was queued, once "
                    "a day: later messages get no answer until the AI works again", now,
                    key=day_key)
            else:  # draft mode, keyed per contact and day: a second one adds nothing
                await aistore.insert_draft(
                    conn, key=day_key, account_id=acct, contact_id=contact,
                    comment_id=p.get("comment_id"), text="", intent=None, confidence=None,
                    reason=f"ai_{exc.outcome}", now=now)
                note = self._notify(
                    job, ctx, inp, "draft",
                    f"the AI failed ({exc.outcome}); one draft a day while it fails: later "
                    "messages get none until the AI works again", now,
                    key=f"ai-failed-draft:{day}")  # not the fallback's: both may come in a day
            await enqueue_in(conn, [note], now)
            await complete_in(conn, job, now)
        if mode != "draft" and self.wake is not None:
            self.wake.set()
        return COMPLETED


# -- hooking into the automation ---------------------------------------------------------------
def lead_score_job(key: str, account_id: str, contact_id: str, now: float) -> NewJob:
    return NewJob("lead_score", f"lead:{key}", {"account_id": account_id,
                                                 "contact_id": contact_id}, run_at=now)


def booking_tap(event: Event) -> float | None:
    """The slot start a tap on one of our booking quick replies (or buttons) chose."""
    if isinstance(event, MessageEvent) and event.kind == EventKind.MESSAGE:
        return parse_payload(event.quick_reply_payload)
    if isinstance(event, PostbackEvent):
        return parse_payload(event.payload)
    return None


def newest_message(event: Event, now: float) -> Msg | None:
    """The message ``event`` adds to the contact's scored history (as the pipeline stores
    it: an inbound DM's text, a button's title), or None."""
    if isinstance(event, MessageEvent) and event.kind == EventKind.MESSAGE and event.text:
        return Msg(event.text, event.occurred_at or now, event.mid)
    if isinstance(event, PostbackEvent) and event.title:
        return Msg(event.title, event.occurred_at or now, event.mid)
    return None


class LeadsAndBooking:
    """Wraps the pipeline's automation: every inbound message, tap or comment also rescores
    the contact's lead, inside the event's transaction (a few indexed reads; a job of its
    own cost more than the scoring); a tap on a booking slot enqueues its ``book_slot`` job
    instead of running the workflows (the slot's title is not a message to answer)."""

    def __init__(self, inner: Automation | None, leads: LeadsConfig) -> None:
        self.inner = inner
        self.leads = leads

    async def plan(self, conn: aiosqlite.Connection, event: Event, *, is_new_contact: bool,
                   now: float) -> list[NewJob]:
        contact = event.contact_id
        mine = contact is not None and contact != event.account_id and isinstance(
            event, MessageEvent | PostbackEvent | CommentEvent)
        start = booking_tap(event) if mine else None
        if start is not None and contact is not None:
            return [NewJob("book_slot", f"book:{event.dedupe_key}", {
                "account_id": event.account_id, "contact_id": contact, "start": start,
            }, run_at=now, at_once=True),
                lead_score_job(event.dedupe_key, event.account_id, contact, now)]
        jobs = (await self.inner.plan(conn, event, is_new_contact=is_new_contact, now=now)
                if self.inner is not None else [])
        if mine and contact is not None:
            jobs += (await rescore_after(conn, self.leads, event.account_id, contact,
                                         newest_message(event, now), now))[1]
        elif (isinstance(event, MessageDeletedEvent) and contact not in (None, event.account_id)
              and await aistore.get_lead(conn, event.account_id, str(contact)) is not None):
            # An unsend took values out (pipeline: forget_unsent): score what is left.
            jobs += (await rescore_in(conn, self.leads, event.account_id, str(contact), now))[1]
        return jobs


@dataclass
class AIFeature:
    replies: AIReplies
    scoring: LeadScoring
    desk: BookingDesk


def responder_for(config: Config, session: aiohttp.ClientSession | None) -> GeminiResponder | None:
    """Gemini when a key is set, else None (the offline responder answers)."""
    key = config.ai.api_key()
    if not key:
        return None
    return GeminiResponder(api_key=key, model=config.ai.model, base_url=config.ai.base_url,
                           timeout_ms=config.ai.timeout_ms, session=session)


def build(rt: Runtime, *, session: aiohttp.ClientSession | None = None,
          typing_after: float = 2.0) -> AIFeature:
    cfg = rt.config

    async def on_booked(conn: aiosqlite.Connection, acct: str, contact: str,
                        now: float) -> list[NewJob]:
        return (await rescore_in(conn, cfg.leads, acct, contact, now))[1]

    desk = BookingDesk(rt.db, cfg, clock=rt.clock, on_booked=on_booked)
    replies = AIReplies(rt.db, cfg, clock=rt.clock, desk=desk,
                        responder=responder_for(cfg, session), wake=rt.wake,
                        typing_after=typing_after)
    return AIFeature(replies, LeadScoring(rt.db, cfg.leads, clock=rt.clock), desk)


def install(rt: Runtime) -> None:
    """Register ``ai_reply``, ``lead_score``, ``book_slot``, the hourly ``leads_rescore``,
    and wrap the automation (see :class:`LeadsAndBooking`). The Gemini client shares the
    runtime's HTTP session (closed with the runtime)."""
    install_feature(rt)


def install_feature(rt: Runtime, *, typing_after: float = 2.0) -> AIFeature:
    """:func:`install`, returning the parts (tests tune ``typing_after``)."""
    feature = build(rt, session=_runtime_session(rt), typing_after=typing_after)
    rt.handlers["ai_reply"] = feature.replies.handle
    rt.handlers["lead_score"] = feature.scoring.handle
    rt.handlers["book_slot"] = feature.desk.book

    async def rescore_stale(job: Job) -> None:
        await feature.scoring.rescore_stale(job)

    rt.add_periodic("leads_rescore", 3600.0, rescore_stale)
    inner = rt.pipeline.automation
    if isinstance(inner, WorkflowAutomation):
        inner.offer_booking = feature.desk.offer_in
    rt.pipeline.automation = LeadsAndBooking(inner, rt.config.leads)
    return feature


def _runtime_session(rt: Runtime) -> aiohttp.ClientSession | None:
    session = getattr(rt, "session", None) or getattr(rt.graph, "_session", None)
    return session if isinstance(session, aiohttp.ClientSession) else None


__all__ = ["AIFeature", "AIReplies", "LeadsAndBooking", "build", "install",
           "install_feature", "load_context", "load_reply_context", "responder_for"]
