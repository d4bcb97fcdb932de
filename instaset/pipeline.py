"""Processing one stored event: history, conversation state, and the automation's decision.

Contract of :meth:`Pipeline.process_event` (the ``process_event`` job handler): everything an
event changes (contact, conversation, history, engine state, the jobs of the actions it
decided) commits in ONE transaction together with the event's ``processed_at`` mark. A rerun
after a crash finds the mark and does nothing, so an event is processed exactly once even
though jobs are delivered at least once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiosqlite

from instaset.ai.scoring import forget_unsent
from instaset.events import (
    CommentEvent,
    Event,
    EventKind,
    MessageDeletedEvent,
    MessageEditEvent,
    MessageEvent,
    PostbackEvent,
    ReactionEvent,
    ReferralEvent,
    parse_stored,
    with_plausible_time,
)
from instaset.queue import COMPLETED, NewJob, Outcome, PermanentJobError, RetryLater, enqueue_in
from instaset.store import history, unsend
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in, pending_under
from instaset.unsent_copies import forget_copies

log = logging.getLogger("instaset.worker")

# How long an echo with no matching send waits for an in-flight send of ours to record its
# message id, before we conclude the creator typed it in the Instagram app.
ECHO_SETTLE_SECONDS = 10.0


class Automation(Protocol):
    """Decides what to do about an event (workflows). Runs inside the event's transaction
    and returns the jobs to enqueue with it."""

    async def plan(
        self, conn: aiosqlite.Connection, event: Event, *, is_new_contact: bool, now: float
    ) -> list[NewJob]: ...


@dataclass(frozen=True, slots=True)
class EchoOrigin:
    sent_by: str  # "automation" or "human"
    in_flight: bool  # a send of ours to this contact has not recorded its outcome yet
    ours: bool = False  # the echo is of a send instaset made (automation or inbox reply)


class SendLedger(Protocol):
    """Correlates echoes with our own sends (implemented by the sending side)."""

    async def echo_origin(
        self, conn: aiosqlite.Connection, account_id: str, contact_id: str, mid: str,
        text: str | None, attachment_types: tuple[str, ...] = (), sent_at: float | None = None,
        *, unsure_waits: bool = False,
    ) -> EchoOrigin: ...

    async def own_comment(
        self, conn: aiosqlite.Connection, parent_id: str | None, text: str | None,
        comment_id: str,
    ) -> bool: ...


def attachments_json(ev: MessageEvent) -> list[dict[str, Any]]:
    """The message's media for the history; a reply to a story carries the story too (its
    URL, while Meta keeps it): without it, "🔥🔥" in the inbox says nothing."""
    out = [{"type": a.type, "url": a.url, "title": a.title} for a in ev.attachments]
    if ev.reply_to_story is not None:
        out.append({"type": "story_reply", "url": ev.reply_to_story.url, "title": None})
    return out


# Meta redelivers for up to 36 h: until then, a message may still arrive after its edit.
WAIT_FOR_MESSAGE = 36 * 3600.0

# A new contact's later messages wait for their first one while its profile is looked up
# (``first_plan``), looking again this often; its completion makes them due at once.
FIRST_MESSAGE_POLL = 0.5


async def _take_back(conn: aiosqlite.Connection, mid: str, account_id: str,
                     contact_id: str | None, now: float) -> None:
    """Honour the unsend of message ``mid`` in this conversation (``contact_id`` None: the
    account took back its own). What was taken from the contact's words goes first (copies
    in notifications, drafts and a continuation's payload; values and quotes in the lead,
    which is rescored after), read while they are still stored; then its text, in the
    history and in the raw events of it and of its edits (their rows stay: a redelivery is
    still a duplicate)."""
    if contact_id is not None:
        said = await unsend.contacts_words(conn, mid)
        if said is not None:  # the contact's (or not stored): theirs to take back
            await forget_copies(conn, mid, account_id, contact_id, said, now)
            await forget_unsent(conn, mid, account_id, contact_id, said, now)
    await unsend.scrub_message(conn, mid)
    await unsend.redact_events(conn, mid, account_id, contact_id)


def _before_its_message(event: MessageEditEvent | ReactionEvent, received_at: float,
                        now: float) -> None:
    """An edit or reaction of a message not stored yet: it came first (redeliveries after
    downtime, catch-up, concurrent processing). Rolls the event's processing back to run
    again later, until :data:`WAIT_FOR_MESSAGE` has passed; then it is done with (a message
    from before instaset, or one never delivered). Storing the message makes it due at once
    (store.history.insert_message), so the checks space out fast: 5 s, then as old as the
    event is, at most 6 h apart (about 20 checks for an edit whose message never comes)."""
    age = max(0.0, now - received_at)
    if age < WAIT_FOR_MESSAGE:
        raise RetryLater(min(6 * 3600.0, max(5.0, age)),
                         f"{event.kind} of {event.mid} before its message",
                         count_attempt=False)


class Pipeline:
    def __init__(
        self,
        db: Database,
        *,
        automation: Automation | None = None,
        ledger: SendLedger | None = None,
        pause_for_seconds: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.automation = automation
        self.ledger = ledger
        self.pause_for_seconds = pause_for_seconds
        self.clock = clock
        # Set (by the catch-up feature) when a workflow has a `follower` condition or a text
        # naming {username}/{first_name}/{name}: a new contact's profile is looked up before
        # their first message is decided (Instagram reveals whether they follow only once
        # they have written, and a DM's webhook carries no username or name).
        self.profile_first: Callable[[str, str], Awaitable[object]] | None = None

    async def process_event(self, job: Job) -> Outcome | None:
        event_id = int(job.payload["event_id"])
        now = self.clock()
        # Relaxed: a power loss can only roll this back together with everything after it,
        # and the event (committed durably by ingest) is then processed again, to the same
        # keys. A send decided here goes out only after its durable in_flight mark. Grouped:
        # the events processed in one turn of the loop share one commit.
        async with self.db.tx(grouped=True) as conn:
            row = await history.get_event_in(conn, event_id)
            if row is None or row["processed_at"] is not None:
                return None  # purged since, or done before: nothing to do
            parsed = parse_stored(row["raw"])
            if len(parsed) != 1:
                raise PermanentJobError(f"stored event {event_id} does not parse to one event")
            event = with_plausible_time(parsed[0], float(row["received_at"]))
            await self._apply(conn, event, event_id, row["received_at"], now)
            await history.mark_processed(conn, event_id, now)
            await complete_in(conn, job, now)
        return COMPLETED

    async def _apply(
        self, conn: aiosqlite.Connection, event: Event, event_id: int, received_at: float,
        now: float,
    ) -> None:
        acct = event.account_id
        contact = event.contact_id
        is_new = False
        defer = False
        person = contact if contact and contact != acct else None  # someone, not the account
        # A disconnected account's events (acknowledged before a deauthorize or `disconnect`)
        # are history only: no workflow, no AI, no profile lookup runs for them.
        live = await history.account_live(conn, acct)
        # A message whose unsend was processed first (webhooks come out of order): stored
        # deleted and without its content, and nothing decides on it (no reply, workflow,
        # AI or lead score: the contact took it back before anyone read it). Only an unsend
        # from its own conversation counts (as for an edit: see the MessageDeletedEvent below).
        unsent = False
        if isinstance(event, MessageEvent) and event.kind == EventKind.MESSAGE:
            gone = await unsend.unsend_of(conn, event.mid)
            if gone is not None and gone["processed_at"] is not None:
                unsent = (gone["account_id"], gone["contact_id"]) == (acct, contact)
                if not unsent:
                    log.warning("the unsend of message %s came from another conversation "
                                "(account %s, contact %s): not applied", event.mid,
                                gone["account_id"], gone["contact_id"])
        if unsent:
            live = False
        if contact and contact != acct:
            username = event.from_username if isinstance(event, CommentEvent) else None
            is_new = await history.touch_contact(conn, acct, contact, now, username=username)
            if (live and not is_new and self.profile_first is not None
                    and self.automation is not None
                    and isinstance(event, MessageEvent | PostbackEvent)
                    and not event.is_from_business
                    and (await pending_under(conn, f"first_plan:{acct}:{contact}:")
                         or await history.earlier_message_waiting(
                             conn, acct, contact, event_id, now + 2 * FIRST_MESSAGE_POLL))):
                # Decided now, this message would overtake the first one (still waiting for
                # the profile): it would take the first-message workflow, and the first would
                # then match as a returning contact's. In order, after it, and after any
                # message of theirs that waited too (the wake below makes them all due at
                # once; one caught mid-wait would otherwise be overtaken by the next).
                raise RetryLater(FIRST_MESSAGE_POLL, "waits for the contact's earlier message",
                                 count_attempt=False)
            if live and is_new and isinstance(event, MessageEvent | PostbackEvent) and (
                not event.is_from_business
            ):
                if self.profile_first is not None and self.automation is not None:
                    # The profile first, then this message (one job: `first_plan`).
                    # at_once: it is this message's reply path (see NewJob.at_once).
                    await enqueue_in(conn, [NewJob(
                        "first_plan", f"first_plan:{acct}:{contact}:{event_id}",
                        {"event_id": event_id},
                        run_at=now, max_attempts=4, at_once=True,
                    )], now)
                    defer = True
                else:
                    # Their profile (username, name) may be fetched now that they wrote to
                    # us; a separate job, so the lookup never delays this reply.
                    await enqueue_in(conn, [NewJob(
                        "profile", f"profile:{acct}:{contact}:new",
                        {"account_id": acct, "contact_id": contact}, run_at=now,
                        max_attempts=4,
                    )], now)
        if isinstance(event, MessageEvent) and contact == acct:
            # A message to itself (Meta's is_self echo): no conversation with anyone.
            pass
        elif isinstance(event, MessageEvent) and contact:
            if event.kind == EventKind.ECHO:
                await self._apply_echo(conn, event, event_id, received_at, now)
                return  # the business's own messages never trigger automation
            await history.insert_message(
                conn, account_id=acct, contact_id=contact, mid=event.mid, direction="in",
                sent_by="contact", text=None if unsent else event.text,
                attachments=[] if unsent else attachments_json(event),
                created_at=event.occurred_at or now, event_id=event_id,
                reply_to=event.reply_to_mid,
            )
            if unsent:
                # This event's text, its edits'.
                await unsend.redact_events(conn, event.mid, acct, contact)
                return
            await history.update_conversation(
                conn, acct, contact, now, inbound_at=event.occurred_at or now,
                message_at=event.occurred_at or now, unread_delta=1,
            )
        elif isinstance(event, PostbackEvent) and contact:
            # A tap on an ice breaker, menu or button opens the 24 h window like a message.
            await history.insert_message(
                conn, account_id=acct, contact_id=contact, mid=event.mid, direction="in",
                sent_by="contact", text=event.title,
                attachments=[{"type": "postback", "url": None, "title": event.payload}],
                created_at=event.occurred_at or now, event_id=event_id,
            )
            await history.update_conversation(
                conn, acct, contact, now, inbound_at=event.occurred_at or now,
                message_at=event.occurred_at or now, unread_delta=1,
            )
        elif isinstance(event, ReferralEvent) and contact:
            # An ig.me link or ad opening the thread resets the 24 h window, as a message
            # does (the engine's state says the same: decide._bookkeep).
            await history.update_conversation(conn, acct, contact, now,
                                              inbound_at=event.occurred_at or now)
        elif isinstance(event, CommentEvent) and event.is_from_business:
            if self.ledger is not None:
                await self.ledger.own_comment(conn, event.parent_id, event.text,
                                              event.comment_id)
        elif isinstance(event, MessageDeletedEvent):
            # Only the thread's own people take back a message of that thread (as for an
            # edit): an unsend naming a message of another conversation is kept (stored,
            # processed) and changes nothing, not even a rescore.
            # Stored in this conversation: marked deleted. Not stored: before its message
            # (the message applies it when it comes from this conversation), or after
            # retention took it.
            deleted = await history.mark_message_deleted(conn, event.mid, now, account_id=acct,
                                                         contact_id=person)
            other = None if deleted else await unsend.message_thread(conn, event.mid)
            if other is not None:
                log.warning("unsend of message %s from account %s, contact %s: the message is "
                            "of another conversation (account %s, contact %s); not applied",
                            event.mid, acct, contact, other["account_id"], other["contact_id"])
                return
            await _take_back(conn, event.mid, acct, person, now)
        elif isinstance(event, MessageEditEvent):
            if await unsend.is_unsent(conn, event.mid, acct, person):
                # Unsent (perhaps before the message came): the edit's text goes too.
                await unsend.redact_events(conn, event.mid, acct, person)
            # Only the thread's own people change its messages (the contact: when the
            # edit names one that is not the account itself).
            elif not await history.edit_message(conn, event.mid, event.text, event.num_edit,
                                                account_id=acct, contact_id=person):
                _before_its_message(event, received_at, now)
        elif isinstance(event, ReactionEvent):
            # The contact id is the other person either way (the recipient when the
            # business reacted): who reacted is the sender.
            who = "business" if event.is_from_business else "contact"
            reaction = (event.emoji or event.reaction) if event.action == "react" else None
            if not await history.set_reaction(conn, event.mid, who, reaction,
                                              account_id=acct, contact_id=person):
                _before_its_message(event, received_at, now)
        if live and self.automation is not None and not event.is_from_business and not defer:
            jobs = await self.automation.plan(conn, event, is_new_contact=is_new, now=now)
            if jobs:
                await enqueue_in(conn, jobs, now)

    async def first_plan(self, job: Job) -> Outcome | None:
        """A new contact's first message when a workflow needs their profile (see
        :attr:`profile_first`): look it up (whatever comes of it: a failed lookup leaves the
        follow status unknown, so a `follower` condition does not hold, and the name empty,
        so templates use their fallbacks), then decide the message as :meth:`process_event`
        would have, in one transaction with the job's completion."""
        event_id = int(job.payload["event_id"])
        async with self.db.read() as conn:
            row = await history.get_event_in(conn, event_id)
            live = row is not None and await history.account_live(conn, row["account_id"])
        if row is None:
            return None  # purged since
        parsed = parse_stored(row["raw"])
        event = (with_plausible_time(parsed[0], float(row["received_at"])) if len(parsed) == 1
                 else None)
        if event is None or self.automation is None or event.contact_id is None:
            return None
        if live and self.profile_first is not None:  # disconnected since: no lookup at Meta
            try:
                await self.profile_first(event.account_id, event.contact_id)
            except Exception as exc:  # the reply must not wait for ever on a lookup
                log.info("profile of %s before their first message: %s", event.contact_id,
                         exc)
        now = self.clock()
        async with self.db.tx(relaxed=True) as conn:
            # No workflow for a disconnected account (see _apply), also one disconnected
            # during the lookup, nor for a message unsent meanwhile (its raw has no text
            # left: it would be decided as an empty message).
            if await history.account_live(conn, event.account_id) and not (
                    isinstance(event, MessageEvent) and await unsend.is_unsent(
                        conn, event.mid, event.account_id, event.contact_id)):
                jobs = await self.automation.plan(conn, event, is_new_contact=True, now=now)
                if jobs:
                    await enqueue_in(conn, jobs, now)
            await complete_in(conn, job, now)
            # Their next messages waited for this one (see _apply): due now, in order.
            await history.wake_contact_events(conn, event.account_id, event.contact_id, now)
        return COMPLETED

    async def _apply_echo(
        self, conn: aiosqlite.Connection, event: MessageEvent, event_id: int,
        received_at: float, now: float,
    ) -> None:
        acct, contact = event.account_id, event.contact_id
        assert contact is not None
        origin = EchoOrigin("human", in_flight=False)
        if self.ledger is not None:
            origin = await self.ledger.echo_origin(
                conn, acct, contact, event.mid, event.text,
                tuple(a.type for a in event.attachments), sent_at=event.occurred_at,
                unsure_waits=now - received_at < ECHO_SETTLE_SECONDS,
            )
        if not origin.ours and origin.in_flight and now - received_at < ECHO_SETTLE_SECONDS:
            # Our send may have reached Meta and not yet recorded its message id: look again
            # shortly instead of mistaking our own message for the creator's.
            raise RetryLater(1.0, "echo waits for an in-flight send", count_attempt=False)
        inserted = await history.insert_message(
            conn, account_id=acct, contact_id=contact, mid=event.mid, direction="out",
            sent_by=origin.sent_by, text=event.text, attachments=attachments_json(event),
            created_at=event.occurred_at or now, event_id=event_id,
        )
        if not inserted:
            return  # recorded before (by our send, or a redelivery): nothing changes
        await history.update_conversation(
            conn, acct, contact, now, message_at=event.occurred_at or now,
        )
        if not origin.ours:
            # The creator answered in the Instagram app: hand the thread to them, for
            # pause_for from when they typed (as replay counts it; a message processed late,
            # after downtime, pauses only what is left of that).
            said = event.occurred_at or now
            await history.creator_took_over(conn, acct, contact, now,
                                            until=said + self.pause_for_seconds, said_at=said)
            log.info("creator replied to %s in the app; automation paused", contact)
