"""Lead scores in the database: rescoring one contact inside a transaction, the
``lead_score`` job and the periodic ``leads_rescore`` job (stale scores after a rules change).

Contract: :func:`rescore_in` reads everything a contact's score depends on (their messages,
fields, tags and stage from the engine state, AI-extracted facts, workflow points, bookings,
and the stored score: the points of messages gone from the history stay), stores the score
with its reasons and the rules' hash, and returns a ``notify`` job the first time the lead
reaches "qualified" (keyed per contact, so the creator is told once).
:func:`forget_unsent` takes an unsent message's words and the values taken from it out of
the lead (the points of its words stay).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import aiosqlite

from instaset.ai.guardrails import quoted_in
from instaset.config import LeadsConfig
from instaset.leads import (
    Fact,
    LeadInput,
    LeadScore,
    Msg,
    Reason,
    qualified_by_evidence,
    rules_hash,
    score_after,
    score_lead,
    unquoted,
)
from instaset.notify import notify_job
from instaset.queue import COMPLETED, NewJob, Outcome, enqueue_in
from instaset.store import ai as aistore
from instaset.store import history, unsend
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in

log = logging.getLogger("instaset.leads")

# Above this many newly qualified leads in one rescoring, the creator gets one summary.
BULK_QUALIFIED = 3


async def lead_input(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, *,
    newest: Msg | Literal[False] | None = False,
) -> LeadInput:
    """Everything the contact's score depends on; with ``newest`` (incremental scoring),
    only that message instead of their whole history, and whether older ones exist."""
    conv = await aistore.conversation_row(conn, account_id, contact_id)
    state = json.loads(conv["state"]) if conv is not None and conv["state"] else {}
    if newest is False:
        messages = tuple(Msg(r["text"], float(r["created_at"]), r["mid"])
                         for r in await aistore.inbound_messages(conn, account_id, contact_id))
        earlier = False
    else:
        messages = (newest,) if newest is not None else ()
        earlier = await aistore.has_inbound_text(conn, account_id, contact_id,
                                                 other_than=newest.mid if newest else None)
    facts = await aistore.lead_facts(conn, account_id, contact_id)
    return LeadInput(
        messages=messages, earlier_messages=earlier,
        fields={str(k): str(v) for k, v in (state.get("fields") or {}).items()},
        tags=frozenset(state.get("tags") or ()),
        facts=tuple(
            Fact(r["source"], r["name"], r["value"], r["evidence"], r["points"],
                 float(r["created_at"]))
            for r in facts
        ),
        workflow_stage=str(state.get("stage") or "new"),
        booked=await aistore.has_booking(conn, account_id, contact_id),
    )


def _quoted(evidence: str) -> str:
    """How the "qualified" notification quotes a reason's evidence."""
    return f' ("{evidence[:60]}")'


def _qualified_text(who: str, score: LeadScore, qualified_at: int) -> str:
    """The "qualified" notice about ``who`` (@username, else the contact id, as every notice
    names a contact). A score under ``qualified_at`` is not quoted as if it qualified: the
    stage (a workflow's ``stage`` step) is what did, and the notice says so."""
    why = "; ".join(
        f"{r.matched if r.rule == 'workflow' else r.rule} {r.points:+d}"
        + (_quoted(r.evidence) if r.evidence else "")
        for r in score.reasons
    )
    if score.score < qualified_at:
        head = (f"{who} is a qualified lead (stage {score.stage}, set by a workflow; score"
                f" {score.score}, under leads.qualified_at {qualified_at})")
    else:
        head = f"{who} is a qualified lead (score {score.score})"
    return f"{head}: {why}" if why else head


def _booking_qualified(result: LeadScore, cfg: LeadsConfig, inp: LeadInput) -> bool:
    """Whether only the contact's booking puts them at or past "qualified" (a booking ranks
    above it: stage ``booked``) while their points are under ``qualified_at``. The creator
    hears of it from the booking's own notice ("@x booked ..."), a stronger signal than a
    score; a second, "qualified lead (score 20)" notice beside it would quote a score under
    the threshold as if it qualified."""
    return inp.booked and result.score < cfg.qualified_at

def stored_score(row: sqlite3.Row | None) -> LeadScore | None:
    """A ``leads`` row as the score it stores (None: never scored)."""
    if row is None:
        return None
    reasons = tuple(Reason.from_dict(d) for d in json.loads(row["reasons"] or "[]"))
    return LeadScore(int(row["score"]), str(row["stage"]), reasons)


async def rescore_in(
    conn: aiosqlite.Connection, cfg: LeadsConfig, account_id: str, contact_id: str, now: float,
    *, stage_by_hand: bool = False,
) -> tuple[LeadScore, list[NewJob]]:
    """Score one contact and store it; see the module docstring. The stored score's reasons
    whose message has left the history (retention, an unsend) stay while their rule does
    (:func:`instaset.leads.carried`).

    ``stage_by_hand``: the creator just set the contact's stage (``contacts set
    stage=...``). A lead it makes qualified (or more) is stored as qualified from now on
    (``qualified_at``), without the "qualified" notice: the creator set it, nothing is news;
    so no later rescore tells it either. A lead their own evidence qualifies
    (:func:`instaset.leads.qualified_by_evidence`) is told as ever, once."""
    before = await aistore.get_lead(conn, account_id, contact_id)
    inp = await lead_input(conn, account_id, contact_id)
    result = score_lead(cfg, inp, stored_score(before))
    notify = not stage_by_hand or qualified_by_evidence(result.score, cfg, inp)
    notify = notify and not _booking_qualified(result, cfg, inp)
    return result, await _store(conn, cfg, account_id, contact_id, result, before, now,
                                notify=notify)


async def rescore_after(
    conn: aiosqlite.Connection, cfg: LeadsConfig, account_id: str, contact_id: str,
    newest: Msg | None, now: float,
) -> tuple[LeadScore, list[NewJob]]:
    """As :func:`rescore_in` after one event of the contact, ``newest`` being the message it
    added to their history (None: it added none, e.g. a comment), without reading that
    history (see :func:`instaset.leads.score_after`); the whole history is scored when the
    stored score is missing, under other rules, or the shortcut cannot decide."""
    before = await aistore.get_lead(conn, account_id, contact_id)
    if before is None or before["rules_hash"] != rules_hash(cfg):
        return await rescore_in(conn, cfg, account_id, contact_id, now)
    prior = stored_score(before)
    assert prior is not None
    inp = await lead_input(conn, account_id, contact_id, newest=newest)
    result = score_after(cfg, prior.reasons, inp)
    if result is None:
        return await rescore_in(conn, cfg, account_id, contact_id, now)
    return result, await _store(conn, cfg, account_id, contact_id, result, before, now,
                                notify=not _booking_qualified(result, cfg, inp))


async def _store(
    conn: aiosqlite.Connection, cfg: LeadsConfig, account_id: str, contact_id: str,
    result: LeadScore, before: sqlite3.Row | None, now: float, *, notify: bool = True,
) -> list[NewJob]:
    """Store ``result``; the "qualified" notice the first time the lead reaches that stage
    (none when not ``notify``: see :func:`rescore_in` and :func:`_booking_qualified`; the
    lead is stored as qualified from then on all the same, so no later rescore tells it),
    to enqueue with the transaction."""
    await aistore.upsert_lead(
        conn, account_id=account_id, contact_id=contact_id, score=result.score,
        stage=result.stage, reasons=[r.to_dict() for r in result.reasons],
        rules_hash=rules_hash(cfg), qualified_at=now if result.qualified else None, now=now,
    )
    jobs: list[NewJob] = []
    if notify and result.qualified and (before is None or before["qualified_at"] is None):
        conv = await aistore.conversation_row(conn, account_id, contact_id)
        username = conv["username"] if conv is not None else None
        text = _qualified_text(f"@{username}" if username else contact_id, result,
                               cfg.qualified_at)
        jobs.append(notify_job(f"lead-qualified:{account_id}:{contact_id}", account_id,
                               contact_id, "lead", text, now))
        log.info("%s qualified (score %d)", contact_id, result.score)
    return jobs


async def forget_unsent(conn: aiosqlite.Connection, mid: str, account_id: str,
                        contact_id: str, said: list[str], now: float) -> None:
    """Honour the contact's unsend of message ``mid`` (Meta's rule) in their lead, inside
    the unsend's transaction, before the message's text is scrubbed (it is read here):

    - The values taken from it go: the AI facts extracted from it lose their value and quote
      (:func:`instaset.store.unsend.forget_fact_values`), the fields an ``ask:`` step captured
      from it leave the conversation's state (:func:`instaset.store.unsend.remove_captured`;
      the step asks again), and the lead's reasons naming those values lose them
      (``AI: budget = '500'`` -> ``AI: budget``, ``field phone = '...'`` -> ``field phone``).
    - Its words go: the lead's reasons and lead facts quoting it lose the quote
      (:func:`instaset.leads.unquoted`: evidence None, and a pattern's matched words), as
      retention strips quotes at the horizon, and so does the "qualified" notification (its
      record, and its delivery while that waits: see
      :func:`instaset.store.history.unquote_notification`). Quoting it means: evidence equal
      to the message's text or one of its earlier (edited) texts (message, field and
      workflow reasons quote a whole message), or, for an AI fact, words of it
      (:func:`instaset.ai.guardrails.quoted_in`; the same words in another message lose
      their quote too).

    The points of its words stay: an unsend takes back the contact's words, not the interest
    they showed by writing them, so like retention at the horizon a reason keeps its rule,
    points and time (an AI fact keeps its name: its rule still holds). A field taken out no
    longer holds for its rule: the rescore that follows the unsend
    (:class:`instaset.ai.feature.LeadsAndBooking`) drops those points.

    ``account_id``, ``contact_id``: the conversation the unsend came from (the caller checked
    that the message, if stored, is of it). ``said``: its texts
    (:func:`instaset.store.unsend.contacts_words`); none when retention already took the
    message, whose values (kept until the contact is erased) go too."""
    acct, contact = account_id, contact_id
    # What a reason says of a value that goes -> what it says without it.
    valueless = {f"AI: {r['name']} = {r['value']!r}": f"AI: {r['name']}"
                 for r in await unsend.forget_fact_values(conn, mid, acct, contact)
                 if r["value"] is not None}
    fields = await unsend.captured_from(conn, mid, acct, contact)
    valueless |= {f"field {r['field']} = {r['value']!r}": f"field {r['field']}"
                  for r in fields if r["value"] is not None}
    if fields:
        await unsend.remove_captured(conn, acct, contact, [r["field"] for r in fields], now)
    if not said and not valueless:
        return
    facts = [f for f in await aistore.lead_facts(conn, acct, contact)
             if f["evidence"] and (f["evidence"] in said or (
                 f["source"] == "ai" and quoted_in(f["evidence"], said)))]
    if facts:
        await aistore.forget_fact_quotes(conn, [f["key"] for f in facts])
    gone = set(said) | {str(f["evidence"]) for f in facts}
    lead = await aistore.get_lead(conn, acct, contact)
    if lead is not None:
        reasons = [Reason.from_dict(d) for d in json.loads(lead["reasons"] or "[]")]
        kept = [unquoted(r) if r.evidence and (r.evidence in gone or (
                    r.matched.startswith("AI: ") and quoted_in(r.evidence, said))) else r
                for r in reasons]
        kept = [replace(r, matched=valueless[r.matched], evidence=None)
                if r.matched in valueless else r for r in kept]
        if kept != reasons:
            gone |= {r.evidence for r, k in zip(reasons, kept, strict=True)
                     if r.evidence and k.evidence is None}
            await aistore.set_lead_reasons(conn, acct, contact, [r.to_dict() for r in kept])
    await history.unquote_notification(conn, f"lead-qualified:{acct}:{contact}",
                                       sorted({_quoted(q) for q in gone}))


async def add_workflow_points(
    conn: aiosqlite.Connection, key: str, account_id: str, contact_id: str, points: int,
    reason: str, now: float,
) -> None:
    """Record a workflow ``score`` step, with the contact's latest message as its evidence."""
    msgs = await aistore.inbound_messages(conn, account_id, contact_id, limit=1)
    await aistore.add_lead_fact(
        conn, key=key, account_id=account_id, contact_id=contact_id, source="workflow",
        name=reason, value=None, evidence=msgs[-1]["text"] if msgs else None, points=points,
        now=now,
    )


class LeadScoring:
    """The job handlers. ``lead_score`` payload: ``account_id``, ``contact_id`` and
    optionally ``points`` + ``reason`` (+ ``workflow``) of a workflow ``score`` step."""

    def __init__(self, db: Database, cfg: LeadsConfig, *, clock: Callable[[], float]) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock

    async def handle(self, job: Job) -> Outcome:
        p = job.payload
        acct, contact = str(p["account_id"]), str(p["contact_id"])
        now = self.clock()
        async with self.db.tx(relaxed=True) as conn:  # re-derived from history if lost
            if p.get("points"):
                reason = str(p.get("reason") or p.get("workflow") or "score step")
                await add_workflow_points(conn, job.key, acct, contact, int(p["points"]),
                                          reason, now)
            _score, jobs = await rescore_in(conn, self.cfg, acct, contact, now)
            await enqueue_in(conn, jobs, now)
            await complete_in(conn, job, now)
        return COMPLETED

    async def rescore_stale(self, job: Job | None = None) -> int:
        """Rescore every contact whose score predates the current rules (periodic job)."""
        return await rescore_all(self.db, self.cfg, self.clock(), only_stale=True)


async def rescore_all(db: Database, cfg: LeadsConfig, now: float, *, only_stale: bool) -> int:
    """Rescore contacts (all, or those scored under other rules), in small transactions so
    ingest is never held up for long. Returns how many were rescored."""
    rows = await aistore.contacts_to_rescore(db, rules_hash(cfg) if only_stale else None)
    qualified: dict[str, list[NewJob]] = {}  # per account: the "qualified" notifications
    for i in range(0, len(rows), 50):
        async with db.tx() as conn:
            for r in rows[i : i + 50]:
                _score, jobs = await rescore_in(conn, cfg, r["account_id"], r["contact_id"], now)
                qualified.setdefault(r["account_id"], []).extend(jobs)
    summary: list[NewJob] = []
    for account_id, jobs in qualified.items():
        if len(jobs) <= BULK_QUALIFIED:
            summary += jobs
            continue
        # A rules change can qualify hundreds of contacts at once: one message, not one each.
        async with db.read() as conn:
            rows_ = [await aistore.conversation_row(conn, account_id, str(j.payload["contact_id"]))
                     for j in jobs[:BULK_QUALIFIED]]
        names = ", ".join(f"@{r['username']}" if r is not None and r["username"] else "a contact"
                          for r in rows_)
        summary.append(notify_job(
            f"leads-qualified:{account_id}:{rules_hash(cfg)}:{int(now)}", account_id, None,
            "lead", f"{len(jobs)} leads became qualified when their scores were recomputed "
            f"({names}, ...): see `instaset leads --stage qualified`", now))
    if summary:
        async with db.tx() as conn:
            await enqueue_in(conn, summary, now)
    return len(rows)
