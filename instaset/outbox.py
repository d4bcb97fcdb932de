"""Outgoing actions: enqueue them durably and deliver each exactly once.

Contract:
- :func:`enqueue_sends` writes one ``sends`` row per part (text over 1000 bytes is split at
  sentence or word boundaries) and one ``send`` job for the first part, inside the caller's
  transaction; later parts are enqueued only when the previous part went out, so they arrive
  in order. The idempotency key of each row is its primary key: enqueueing it again is a no-op.
- :meth:`Deliverer.deliver` (the ``send`` job handler) checks the sending rules first (a
  refusal makes no Graph call and is recorded with its reason and, in ``detail``, its
  words, scrubbed of tokens), waits for the account's rate budget without spending a try,
  marks the row ``in_flight`` before calling Meta, and records the message id with the
  history row when Meta answers.
- Unknown outcome (a timeout after the request left): the row stays ``in_flight``. If Meta
  did deliver it, its echo arrives and :meth:`Deliverer.echo_origin` recognises it (same
  contact, same text) and marks the row sent; the retry then finds it sent and does nothing.
  When two rows in flight to the contact match one echo, neither the echo nor a retry
  claims it for up to the pipeline's ``ECHO_SETTLE_SECONDS``: the send whose answer records
  the echo's message id does; after that, the oldest (or the first of them whose retry
  looks). Only if no echo arrives within ``echo_wait`` seconds is the request sent again:
  the one residual window for a duplicate (Meta accepted it and its echo was lost).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import aiosqlite

from instaset.errors import (
    AlreadyReplied,
    GraphError,
    InvalidParameter,
    PermissionMissing,
    Throttled,
    TokenInvalid,
    Transient,
    UserUnavailable,
    WindowClosed,
)
from instaset.events import CommentEvent, EventKind, MessageEvent, parse_stored
from instaset.graph import GraphClient, QuickReply, SendResult, redact, split_text
from instaset.metrics import Metrics
from instaset.pipeline import ECHO_SETTLE_SECONDS, EchoOrigin
from instaset.queue import COMPLETED, NewJob, Outcome, RetryLater, enqueue, enqueue_in
from instaset.ratelimit import Budgets, SendClass
from instaset.refusals import ALREADY_ANSWERED, ALREADY_ANSWERED_WORDS, refusal_notice_in
from instaset.rules import Clearance, SendFacts, SendKind, check_send
from instaset.store import history
from instaset.store import sends as sendstore
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in
from instaset.token_health import mark_rejected, token_replaced
from instaset.tokens import TokenProvider

log = logging.getLogger("instaset.graph")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One outgoing action. ``key`` is its idempotency key (e.g. ``send:{event}:{n}``)."""

    key: str
    kind: SendKind
    account_id: str
    contact_id: str | None = None
    comment_id: str | None = None
    comment_at: float | None = None
    text: str | None = None
    quick_replies: tuple[tuple[str, str], ...] = ()  # (title, payload)
    media_type: str | None = None
    media_url: str | None = None
    template: str | None = None  # JSON: {"type": "generic"|"button", ...}
    action: str | None = None  # sender action, or the reaction for REACT
    target_mid: str | None = None  # the message a reaction applies to
    sent_by: str = "automation"
    workflow: str | None = None
    next_key: str | None = None
    live: bool = False  # caused by a live comment: its private reply has its own budget
    before_handoff: bool = False  # decided together with a handoff: the pause follows it
    # A public reply announcing the comment's private reply: it goes only if that went.
    after_private: bool = False
    # A human reply (`inbox reply`) that paused automation: (the pause it set, the pause and
    # unread count before it). A reply refused or failed later gives them back (_refuse).
    undo_pause: tuple[float, float | None, int] | None = None
    # A send the engine refused before its text was written (an AI reply, a booking offer):
    # the step it stands for (``ai_reply``, ``offer_booking``), so the thread can name it.
    step: str | None = None

    def to_json(self) -> str:
        d = asdict(self)
        if d["step"] is None:  # only refused sends have one: other bodies stay as they were
            del d["step"]
        return json.dumps(d, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Outgoing:
        d: dict[str, Any] = json.loads(text)
        d["kind"] = SendKind(d["kind"])
        d["quick_replies"] = tuple(tuple(q) for q in d.get("quick_replies", ()))
        if d.get("undo_pause") is not None:
            d["undo_pause"] = tuple(d["undo_pause"])
        return cls(**d)

    @property
    def send_class(self) -> SendClass:
        if self.kind == SendKind.PRIVATE_REPLY:
            return SendClass.LIVE_PRIVATE_REPLY if self.live else SendClass.PRIVATE_REPLY
        if self.kind == SendKind.PUBLIC_REPLY:
            return SendClass.PUBLIC_REPLY
        if self.kind == SendKind.MEDIA and self.media_type != "image":
            return SendClass.MEDIA
        return SendClass.TEXT


def split_parts(out: Outgoing) -> list[Outgoing]:
    """Split a long text (over 1000 UTF-8 bytes) into ordered parts; quick replies ride on
    the last part, where the person will see them."""
    if out.kind not in (SendKind.TEXT, SendKind.PRIVATE_REPLY) or not out.text:
        return [out]
    chunks = split_text(out.text)
    if len(chunks) <= 1:
        return [out]
    keys = [out.key] + [f"{out.key}#{i}" for i in range(2, len(chunks) + 1)]
    parts: list[Outgoing] = []
    for i, (key, chunk) in enumerate(zip(keys, chunks, strict=True)):
        last = i == len(chunks) - 1
        part = replace(out, key=key, text=chunk, quick_replies=out.quick_replies if last else (),
                       # a later part failing after the first went out: the reply is out
                       undo_pause=out.undo_pause if i == 0 else None)
        if i > 0 and out.kind == SendKind.PRIVATE_REPLY:
            # Only one private reply per comment: the rest continue as DMs in the thread
            # once the person answers. Here they follow as plain texts.
            part = replace(part, kind=SendKind.TEXT, comment_id=None)
        parts.append(part)
    return parts


def echo_matches(out: Outgoing, text: str | None, attachment_types: Sequence[str]) -> bool:
    """Whether a message echo (its text and attachment types) can be ``out``'s. A text must
    be the same text; a text-less send (media, template) needs an echo without text that
    carries an attachment of its kind, so a photo the creator sends from the app is not
    taken for our template. (Two images cannot be told apart: Meta's echo carries its own
    copy's URL, not ours.)"""
    if out.text is not None or text is not None:
        return out.text == text
    if out.kind == SendKind.MEDIA:
        return (out.media_type or "image") in attachment_types
    if out.kind == SendKind.TEMPLATE:
        return "template" in attachment_types
    return False


def echo_candidates(flying: Sequence[sqlite3.Row], text: str | None,
                    attachment_types: Sequence[str]) -> list[sqlite3.Row]:
    """The rows among ``flying`` (sends in flight to one contact, oldest first) that an echo
    with ``text`` and ``attachment_types`` could be the echo of (:func:`echo_matches`)."""
    return [s for s in flying
            if echo_matches(Outgoing.from_json(s["body"]), text, attachment_types)]


def send_job(key: str, run_at: float) -> NewJob:
    # at_once: the reply goes out as soon as its decision commits, without a turn in the
    # queue (the next link of a chain likewise, as soon as this one is done).
    return NewJob("send", f"send:{key}", {"key": key}, run_at=run_at, max_attempts=8,
                  at_once=True)


async def enqueue_sends(
    conn: aiosqlite.Connection, outs: Sequence[Outgoing], now: float, run_at: float | None = None
) -> list[str]:
    """Persist the sends of one decision as ONE ordered chain (long texts split into parts)
    and the job of its first link; each link enqueues the next when it is done (sent or
    refused), so the person sees them in order. Returns the keys."""
    parts = [part for out in outs for part in split_parts(out)]
    if not parts:
        return []
    chained = [
        replace(p, next_key=parts[i + 1].key if i + 1 < len(parts) else None)
        for i, p in enumerate(parts)
    ]
    rows = [
        (p.key, p.account_id, p.contact_id, p.comment_id, str(p.kind), p.to_json(), p.sent_by,
         p.workflow, now)
        for p in chained
    ]
    await sendstore.insert_sends(conn, rows)
    await enqueue_in(conn, [send_job(chained[0].key, now if run_at is None else run_at)], now)
    return [p.key for p in chained]


ACCOUNT_WIDE_THROTTLES = frozenset({4, 17, 32})
MAX_DETAIL = 1000  # characters of a refusal's words kept on the send (Meta's: 500 at most)
ECHO_WAIT = 15.0  # s an unknown outcome waits for its echo before the send may go again
PRIVATE_REPLY_POLL = 60.0  # s between looks of a public reply at its queued private reply
# Meta retries a webhook for up to 36 h: how far back a late echo may belong to a send.
LATE_ECHO_SECONDS = 36 * 3600.0
# Meta's clock against ours: a late echo is stamped at most this long after our try.
LATE_ECHO_SKEW = 5.0

_FINAL_ERRORS: dict[type[GraphError], str] = {
    WindowClosed: "window_closed",
    UserUnavailable: "user_unavailable",
    PermissionMissing: "permission_missing",
    InvalidParameter: "invalid_parameter",
    # No try of this send reached Meta: the comment's private reply came from elsewhere.
    AlreadyReplied: ALREADY_ANSWERED,
}


class Deliverer:
    def __init__(
        self,
        db: Database,
        graph: GraphClient,
        tokens: TokenProvider,
        budgets: Budgets,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        echo_wait: float | None = None,
        on_refused: Callable[[Outgoing, str, str], None] | None = None,
    ) -> None:
        self.db = db
        self.graph = graph
        self.tokens = tokens
        self.budgets = budgets
        self.metrics = metrics
        self.clock = clock
        # How long a send whose outcome is unknown waits for its echo before it goes again.
        # Meta's echo comes within seconds of a send it carried out. A call still running in
        # another process (`inbox reply` from the CLI) is not what this waits for: its job
        # keeps its lease (a live worker's jobs are never released, and a job is cut off at
        # 3/4 of a lease of at least 30 s, after the 20 s a Graph call may take), so no
        # second worker looks at the row meanwhile. (It was the Graph timeout + 10 s for
        # one session: the soak's 5xx faults then held first replies ~30 s.)
        self.echo_wait = echo_wait if echo_wait is not None else ECHO_WAIT
        # The echo of a send made before this process started could not arrive while no
        # process was listening: its wait counts from now, not from the in_flight mark.
        self.started_at = clock()
        self.on_refused = on_refused
        # True while `inbox reply` (this process) delivers and shows the outcome itself: a
        # human reply's refusal is then not also notified.
        self.human_watched = False

    def _count(self, out: Outgoing, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.sends.labels(str(out.kind), outcome).inc()

    async def _refuse(self, out: Outgoing, state: str, reason: str, detail: str) -> None:
        """Record ``out`` ``state`` (refused, failed) for ``reason``; ``detail`` (Meta's
        words and code, or the rules') goes on the send, scrubbed of anything token-like."""
        now = self.clock()
        detail = redact(detail)[:MAX_DETAIL]
        async with self.db.tx(relaxed=True) as conn:  # a refusal is decided again if lost
            await sendstore.set_state_in(conn, out.key, state, now, reason=reason,
                                         detail=detail)
            if out.next_key:  # the rest of the chain still gets its own verdict
                await enqueue_in(conn, [send_job(out.next_key, now)], now)
            if out.undo_pause is not None and out.contact_id is not None:
                # A human reply that never went out must not silence automation for hours
                # (unless another pause was set since: that one stands).
                until, previous, unread = out.undo_pause
                await history.undo_pause(conn, out.account_id, out.contact_id, now,
                                         paused_until=until, previous_until=previous,
                                         previous_unread=unread)
            notice = await refusal_notice_in(conn, out, state, reason, detail, now)
            if notice is not None and not (out.sent_by == "human" and self.human_watched):
                await enqueue_in(conn, [notice], now)
        self._count(out, reason)
        log.info("send %s %s: %s (%s)", out.key, state, reason, detail)
        if self.on_refused is not None:
            self.on_refused(out, reason, detail)

    async def _continue_chain(self, out: Outgoing, now: float) -> None:
        """Queue the next send of ``out``'s chain (a relaxed commit; the job key makes a
        second one a no-op), when this one is settled without a call of its own."""
        if out.next_key:
            await enqueue(self.db, [send_job(out.next_key, now)], now, relaxed=True)

    async def deliver(self, job: Job) -> Outcome | None:
        key = str(job.payload["key"])
        row = await sendstore.get_send_for_delivery(self.db, key)
        if row is None:
            return None  # purged
        out = Outgoing.from_json(row["body"])
        if row["state"] in ("sent", "refused", "failed"):
            # Done before: a redelivered job, or a send whose lost answer its echo settled.
            # The rest of the chain must still go (the job key makes this idempotent).
            await self._continue_chain(out, self.clock())
            return None
        now = self.clock()
        # An earlier try may have reached Meta (its outcome stayed unknown: a lost answer, a
        # server error): see 10900 below. A throttled try, or a dead token's, was not sent.
        tried_unknown = row["state"] == "in_flight" or row["unknown_at"] is not None
        if row["state"] == "in_flight":
            # The last try may have reached Meta. Its echo, if any, marks the row sent: it
            # is waited for before the rules are applied again (a pause the creator caused
            # meanwhile must not refuse a message Meta may already have delivered).
            if now - max(float(row["updated_at"]), self.started_at) < self.echo_wait:
                raise RetryLater(
                    1.0, "waiting for the echo of a send with an unknown outcome",
                    count_attempt=False,
                )
            mid = await self._stored_echo(out, float(row["updated_at"]))
            if mid is not None:
                # Meta did deliver it: its echo (or own-comment webhook) is stored, but the
                # worker is behind and has not processed it. Sending again would duplicate.
                async with self.db.tx(relaxed=True) as conn:
                    await sendstore.mark_sent_in(conn, key, mid, now)
                    if out.next_key:
                        await enqueue_in(conn, [send_job(out.next_key, now)], now)
                    await complete_in(conn, job, now)
                log.info("send %s confirmed by its stored, unprocessed echo", key)
                return COMPLETED
            log.warning("send %s: no echo after an unknown outcome; it may go again", key)
            await sendstore.mark_unknown_try(self.db, key)
        # The window, pause and budget facts were read with the row (one read, not two).
        facts = SendFacts(
            kind=out.kind, human=out.sent_by == "human",
            account_state=row["account_state"] or "disconnected",
            last_inbound_at=row["last_inbound_at"],
            paused_until=None if out.before_handoff else row["paused_until"],
            comment_at=out.comment_at,
            private_reply_used=bool(row["private_reply_used"]),
            after_private=out.after_private,
            quick_reply_titles=tuple(t for t, _ in out.quick_replies),
        )
        if out.after_private and row["private_reply_pending"] and not facts.private_reply_used:
            # The private reply it announces is still queued (a delay shorter than its wait
            # for the budget): the public reply follows it, whatever becomes of it.
            raise RetryLater(PRIVATE_REPLY_POLL, "waiting for the comment's private reply",
                             count_attempt=False)
        verdict = check_send(facts, now)
        if not isinstance(verdict, Clearance):
            await self._refuse(out, "refused", verdict.reason, verdict.detail)
            return None
        token = await self.tokens.token(out.account_id)
        if not token:
            await self._refuse(out, "refused", "no_token",
                               "no access token stored; run `instaset connect`")
            return None
        # The budget is taken last, right before the request, so nothing slow between the
        # two can bunch requests up at Meta's end.
        wait = self.budgets.reserve(out.account_id, out.send_class, out.key)
        if wait > 0:
            raise RetryLater(wait, "waiting for the rate budget", count_attempt=False)
        if not await sendstore.set_state(self.db, key, "in_flight", now, attempt=True,
                                         durable=True):
            # Its echo settled it (or a purge removed it) since the row was read: sending
            # now would duplicate it. The chain goes on as for a send done before.
            await self._continue_chain(out, now)
            return None
        try:
            result = await self._call(out, token, verdict.human_agent_tag)
        except ValueError as exc:
            # GraphClient checks its arguments before any request (a rendered text too long
            # for a template, ...): nothing was sent, and retrying cannot help.
            await self._refuse(out, "failed", "invalid_request", str(exc))
            return None
        except TokenInvalid as exc:
            if await token_replaced(self.tokens, out.account_id, token):
                # A cached token that `instaset connect` has replaced since: try the new one.
                await sendstore.set_state(self.db, key, "pending", self.clock())
                raise RetryLater(0.0, "the access token was replaced", count_attempt=False
                                 ) from None
            # The account needs `instaset connect`, and the creator is told (token_health).
            await mark_rejected(self.db, out.account_id, self.clock())
            await self._refuse(out, "refused", "token_invalid", exc.describe())
            return None
        except Throttled as exc:
            delay = exc.retry_after if exc.retry_after is not None else 60.0
            # Codes 4, 17 and 32 limit the app, the account or the page as a whole: every
            # kind of send waits. Others (613, a send-API subcode) limit this kind only.
            classes = SendClass if exc.code in ACCOUNT_WIDE_THROTTLES else (out.send_class,)
            started = [self.budgets.block(out.account_id, cls, delay) for cls in classes]
            if any(started):  # one line per episode: the sends waiting behind it say nothing
                log.warning("Meta throttled sends of account %s (%s): %s sends wait %.0f s",
                            out.account_id, exc.describe(),
                            "all" if len(started) > 1 else out.send_class, delay)
            await sendstore.set_state(self.db, key, "pending", self.clock())
            # Not an attempt: throttling says when to come back, and a send must not be
            # dead-lettered because Meta asked us to slow down.
            raise RetryLater(delay, f"throttled by Meta: {exc.describe()}",
                             count_attempt=False) from None
        except Transient as exc:
            self._count(out, "transient")
            if job.attempts >= job.max_attempts:
                await self._give_up(out, exc)
                return None
            if not exc.outcome_unknown:
                await sendstore.set_state(self.db, key, "pending", self.clock())
            raise
        except GraphError as exc:
            if (isinstance(exc, AlreadyReplied) and out.kind == SendKind.PRIVATE_REPLY
                    and tried_unknown):
                # One private reply per comment: Meta's "already replied to" after a try
                # whose answer was lost and whose echo never came says that try delivered
                # this very reply. It is sent (its message id unknown until a late echo).
                log.info("send %s: Meta says the comment was answered; the earlier try "
                         "whose answer was lost delivered it", key)
                await self._record_sent(out, SendResult(out.contact_id, None), job)
                return COMPLETED
            reason = next(
                (slug for cls, slug in _FINAL_ERRORS.items() if isinstance(exc, cls)), "graph_error"
            )
            detail = exc.describe()
            if reason == ALREADY_ANSWERED:  # on our first try: the reply came from elsewhere
                detail = f"{ALREADY_ANSWERED_WORDS}; {detail}"
            await self._refuse(out, "failed", reason, detail)
            return None
        await self._record_sent(out, result, job)
        return COMPLETED

    async def _give_up(self, out: Outgoing, exc: Transient) -> None:
        """The last try failed transiently: record a verdict and let the rest of the chain go
        rather than leave the send pending for ever. A send that may have reached Meta stays
        in_flight, so its echo, should it come, still marks it sent."""
        if not exc.outcome_unknown:
            await self._refuse(out, "failed", "gave_up", exc.describe())
            return
        await self._continue_chain(out, self.clock())
        log.warning("send %s: gave up with its outcome unknown (%s)", out.key, exc.describe())

    async def _record_sent(self, out: Outgoing, result: SendResult, job: Job) -> None:
        now = self.clock()
        # Relaxed: if a power loss undoes it, the row is back to its durable in_flight mark
        # and the echo settles it, as for any unknown outcome.
        async with self.db.tx(relaxed=True) as conn:
            await sendstore.mark_sent_in(conn, out.key, result.message_id, now)
            contact = out.contact_id or result.recipient_id
            if contact and out.kind in (SendKind.TEXT, SendKind.MEDIA, SendKind.TEMPLATE,
                                        SendKind.PRIVATE_REPLY):
                await history.touch_contact(conn, out.account_id, contact, now)
                attachments = (
                    [{"type": out.media_type, "url": out.media_url, "title": None}]
                    if out.kind == SendKind.MEDIA else []
                )
                await history.insert_message(
                    conn, account_id=out.account_id, contact_id=contact, mid=result.message_id,
                    direction="out", sent_by=out.sent_by, text=out.text,
                    attachments=attachments, created_at=now,
                )
                await history.update_conversation(conn, out.account_id, contact, now,
                                                  message_at=now)
            if out.next_key:
                await enqueue_in(conn, [send_job(out.next_key, now)], now)
            await complete_in(conn, job, now)
        self._count(out, "sent")

    async def _call(self, out: Outgoing, token: str, human_agent: bool) -> SendResult:
        g, acct = self.graph, out.account_id
        to = out.contact_id or ""
        match out.kind:
            case SendKind.TEXT:
                qrs = [QuickReply(title=t, payload=p) for t, p in out.quick_replies]
                return await g.send_text(acct, to, out.text or "", token=token,
                                         quick_replies=qrs, human_agent=human_agent)
            case SendKind.PRIVATE_REPLY:
                return await g.private_reply(acct, out.comment_id or "", out.text or "",
                                             token=token)
            case SendKind.PUBLIC_REPLY:
                new_id = await g.public_reply(out.comment_id or "", out.text or "", token=token)
                return SendResult(None, new_id)
            case SendKind.MEDIA:
                return await g.send_attachment(acct, to, out.media_type or "image",
                                               out.media_url or "", token=token)
            case SendKind.TEMPLATE:
                tpl = json.loads(out.template or "{}")
                if tpl.get("type") == "button":
                    return await g.send_button_template(acct, to, tpl.get("text", ""),
                                                        tpl.get("buttons", []), token=token)
                return await g.send_generic_template(acct, to, tpl.get("elements", []),
                                                     token=token)
            case SendKind.SENDER_ACTION:
                await g.sender_action(acct, to, out.action or "typing_on",  # type: ignore[arg-type]
                                      token=token)
                return SendResult(to, None)
            case SendKind.REACT:
                if out.action:
                    await g.react(acct, to, out.target_mid or "", out.action, token=token)
                else:
                    await g.unreact(acct, to, out.target_mid or "", token=token)
                return SendResult(to, None)

    async def _stored_echo(self, out: Outgoing, since: float) -> str | None:
        """The id Meta gave ``out``, read from a stored event not processed yet, received
        since the in_flight mark at ``since``, that no other send claims: the echo of a
        message (same contact, :func:`echo_matches`) or, for a public reply, the account's
        own comment under the same parent with the same text. None if there is none.
        Raises :class:`RetryLater` (not a try) while such an echo is younger than
        ``ECHO_SETTLE_SECONDS`` and another send in flight to the contact matches it too:
        as in :meth:`echo_origin`, the send whose answer records its id claims it."""
        public = out.kind == SendKind.PUBLIC_REPLY
        about = out.account_id if public else out.contact_id
        if about is None or (public and not out.comment_id):
            return None
        kind = EventKind.COMMENT if public else EventKind.ECHO
        for ev_row in await sendstore.unprocessed_events(
            self.db, out.account_id, about, kind, since
        ):
            for ev in parse_stored(ev_row["raw"]):
                if isinstance(ev, CommentEvent) and public:
                    found = ev.comment_id if ev.parent_id == out.comment_id else None
                elif isinstance(ev, MessageEvent) and not public:
                    found = ev.mid
                else:
                    continue
                types = tuple(a.type for a in ev.attachments) if isinstance(
                    ev, MessageEvent) else ()
                if (found and echo_matches(out, ev.text, types)
                        and await sendstore.get_send_by_mid(self.db, found) is None):
                    if not public and await self._also_in_flight(
                            out, ev.text, types, float(ev_row["received_at"])):
                        raise RetryLater(1.0, "an echo that two sends in flight could explain "
                                         "waits for their answers", count_attempt=False)
                    return found
        return None

    async def _also_in_flight(self, out: Outgoing, text: str | None, types: tuple[str, ...],
                              received_at: float) -> bool:
        """Whether an echo received at ``received_at`` (younger than ``ECHO_SETTLE_SECONDS``)
        matches another send in flight to ``out``'s contact as well as ``out`` (itself in
        flight). A send that went in flight after the echo came counts too (it cannot be
        the echo's origin): the wait is bounded and ends the same way."""
        if self.clock() - received_at >= ECHO_SETTLE_SECONDS or out.contact_id is None:
            return False
        async with self.db.read() as conn:
            flying = await sendstore.in_flight_sends(conn, out.account_id, out.contact_id)
        return any(s["key"] != out.key for s in echo_candidates(flying, text, types))

    # -- echo correlation (the pipeline's SendLedger) ----------------------------------------
    async def own_comment(
        self, conn: aiosqlite.Connection, parent_id: str | None, text: str | None,
        comment_id: str,
    ) -> bool:
        """Meta's ``comments`` webhook for the account's own reply: it settles a public reply
        whose outcome we did not learn, so it is not posted twice."""
        if not parent_id:
            return False
        for send in await sendstore.in_flight_public_replies(conn, parent_id):
            if Outgoing.from_json(send["body"]).text == text:
                await sendstore.mark_sent_in(conn, send["key"], comment_id, self.clock())
                log.info("public reply %s confirmed by its comment webhook", send["key"])
                return True
        return False

    async def echo_origin(
        self, conn: aiosqlite.Connection, account_id: str, contact_id: str, mid: str,
        text: str | None, attachment_types: tuple[str, ...] = (), sent_at: float | None = None,
        *, unsure_waits: bool = False,
    ) -> EchoOrigin:
        """See :class:`~instaset.pipeline.SendLedger`. ``unsure_waits``: when two sends or
        more in flight to the contact match the echo, settle none of them and answer "not
        ours, in flight" (the pipeline looks again shortly); without it, the oldest."""
        row = await sendstore.send_by_message_id(conn, mid)
        if row is not None:
            return EchoOrigin(row["sent_by"], in_flight=False, ours=True)
        flying = await sendstore.in_flight_sends(conn, account_id, contact_id)
        matching = echo_candidates(flying, text, attachment_types)
        if len(matching) > 1 and unsure_waits:
            # Which of them Meta echoed, the message id its send records tells, usually a
            # moment later (the echo often comes before the send's answer). Settling the
            # oldest now could mark as sent one whose call failed: never sent again.
            return EchoOrigin("automation", in_flight=True, ours=False)
        for send in matching:
            # A send whose outcome we did not learn: Meta delivered it after all.
            await sendstore.mark_sent_in(conn, send["key"], mid, self.clock())
            log.info("send %s confirmed by its echo", send["key"])
            return EchoOrigin(send["sent_by"], in_flight=False, ours=True)
        if not flying and sent_at is not None:
            # The late echo of a try whose answer was lost, after the send went again (or
            # was given up): Meta delivered that try too, and stamped it then. Still ours,
            # not the creator typing in the app (which would pause automation); what the
            # creator types later is stamped later.
            since = self.clock() - LATE_ECHO_SECONDS
            for send in await sendstore.unknown_tries(conn, account_id, contact_id, since):
                if (sent_at <= float(send["unknown_at"]) + LATE_ECHO_SKEW
                        and echo_matches(Outgoing.from_json(send["body"]), text,
                                         attachment_types)):
                    if send["state"] == "sent" and send["message_id"] is None:
                        # Recorded sent without its id (Meta answered the retry of a private
                        # reply "already replied to"): this is its message, stored then.
                        await sendstore.mark_sent_in(conn, send["key"], mid, self.clock())
                        await history.identify_message(
                            conn, account_id, contact_id, text, mid,
                            since=float(send["created_at"]))
                    log.info("echo %s: a late echo of an earlier try of send %s", mid,
                             send["key"])
                    return EchoOrigin(send["sent_by"], in_flight=False, ours=True)
        return EchoOrigin("human", in_flight=bool(flying), ours=False)
