"""Offering free slots and booking one: the I/O core of :class:`~instaset.booking.BookingDesk`.

- :meth:`SlotDesk.offer_in` builds the message offering the next free slots (payload
  ``BOOK:<unix start>``) inside the caller's transaction, so it keeps its place in a
  decision's chain of sends. :meth:`SlotDesk.book` (the ``book_slot`` job) re-checks the
  slot and inserts the booking in one transaction; the partial unique index on (account,
  start) makes the second of two concurrent taps fail, and that person gets the next free
  slots. The confirmation carries "Reschedule"/"Cancel" quick replies; reminders are
  scheduled with the booking.
- No free slot at all (an offer, or a tap on a time just taken): the contact gets the
  ``no_slots`` message and the creator a notice naming them, so nobody is left waiting.
- One live booking per contact. A contact whose booking is still ahead and who asks to book
  again (an offer) or taps a slot gets ``already_booked`` with that booking's
  "Reschedule"/"Cancel" quick replies instead of a second booking; a tap on the very slot
  they hold confirms it again (the ``confirmation``), never "no longer free". Why: the lead
  stage ("booked: has a booking"), the Reschedule/Cancel buttons and the reminders are each
  about one appointment, and nothing else stopped a contact from holding every slot (each
  tap on a still-open offer, or the menu's "Book a call" path, booked one more, with one
  more notice to the creator). Moving is what Reschedule is for. A booking that has started
  no longer counts, so a follow-up can be booked after the call. The limit applies to the
  contact's taps and offers only; bookings are made nowhere else.
- The helpers every later change shares: :meth:`SlotDesk.refusal_in` (the sending rules),
  the configured texts and :meth:`SlotDesk.reminder_jobs`.

The configured texts are filled with ``str.format``, each with the names
:data:`~instaset.config_booking.BOOKING_TEXT_PLACEHOLDERS` lists for it (the config is checked
against that list when it loads).

:class:`~instaset.booking_lifecycle.BookingDesk` extends :class:`SlotDesk` with the lifecycle
(cancel, reschedule, the contact's taps, reminders); use that one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import aiosqlite

from instaset.booking_slots import (
    REMINDER_KIND,
    Slot,
    booking_link,
    free_slots,
    manage_replies,
    reminder_key,
    slot_label,
    slot_payload,
    slot_when,
    tz_label,
)
from instaset.config import Config
from instaset.notify import notify_job
from instaset.outbox import Outgoing, enqueue_sends
from instaset.queue import NewJob, enqueue_in
from instaset.rules import Clearance, Refusal, SendFacts, SendKind, check_send
from instaset.store import ai as aistore
from instaset.store import booking as bstore
from instaset.store import sends as sendstore
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in
from instaset.timefmt import format_duration

log = logging.getLogger("instaset.booking")

OnBooked = Callable[[aiosqlite.Connection, str, str, float], Awaitable[list[NewJob]]]


class SlotDesk:
    """Offers and books (see the module docstring).
    ``on_booked(conn, account_id, contact_id, now)`` returns extra jobs to enqueue whenever
    a booking of the contact is made or cancelled (the lead rescoring)."""

    def __init__(
        self, db: Database, config: Config, *, clock: Callable[[], float],
        on_booked: OnBooked | None = None,
    ) -> None:
        self.db = db
        self.cfg = config.booking
        self.tz = config.tzinfo
        self.clock = clock
        self.on_booked = on_booked

    # -- offering and booking --------------------------------------------------------------
    async def slots_in(self, conn: aiosqlite.Connection, account_id: str, now: float,
                       limit: int | None) -> list[Slot]:
        end = now + (self.cfg.horizon + self.cfg.slot_length + self.cfg.buffer).total_seconds()
        busy = await aistore.busy_between(conn, account_id, now - 86400, end)
        return free_slots(self.cfg, self.tz, now, busy, limit=limit)

    def _offer(self, key: str, account_id: str, contact_id: str, text: str,
               slots: Sequence[Slot], workflow: str | None,
               payload: Callable[[float], str] = slot_payload) -> Outgoing:
        return Outgoing(
            key=key, kind=SendKind.TEXT, account_id=account_id, contact_id=contact_id,
            text=text, workflow=workflow,
            quick_replies=tuple((slot_label(s.start, self.tz), payload(s.start))
                                for s in slots),
        )

    async def offer_in(
        self, conn: aiosqlite.Connection, account_id: str, contact_id: str, key: str,
        intro: str | None, workflow: str | None, now: float,
    ) -> list[Outgoing]:
        """The message offering the next ``booking.offer`` free slots; with ``booking.link``,
        the message with the scheduling page's link for this contact instead (tracked like
        every link). To a contact with a booking ahead, ``already_booked`` with its
        Reschedule/Cancel quick replies. With no free slot, the ``no_slots`` message, and
        the creator is notified (naming the contact) by a job queued in this transaction."""
        if self.cfg.link:
            url = booking_link(self.cfg.link, contact_id)
            return [Outgoing(key=key, kind=SendKind.TEXT, account_id=account_id,
                             contact_id=contact_id, workflow=workflow,
                             text=self.cfg.link_text.format(link=url))]
        mine = await bstore.upcoming_booking(conn, account_id, contact_id, now)
        if mine is not None:  # one live booking per contact (module docstring)
            return [replace(self._manage_out(key, mine, self._text(
                "already_booked", mine, mine["start_at"])), workflow=workflow)]
        slots = await self.slots_in(conn, account_id, now, self.cfg.offer)
        if not slots:
            log.warning("no free booking slot for %s in the next %s", contact_id,
                        self.cfg.horizon)
            who = await self._who_in(conn, account_id, contact_id)
            await enqueue_in(conn, [notify_job(
                f"booking:none:{key}", account_id, contact_id, "booking",
                f"{who} wants to book, but {self._none_free()}; they get booking.no_slots",
                now)], now)
            return [replace(self._no_slots_out(key, account_id, contact_id, self.cfg.title),
                            workflow=workflow)]
        text = intro or self.cfg.intro.format(timezone=tz_label(self.tz))
        return [self._offer(key, account_id, contact_id, text, slots, workflow)]

    async def book(self, job: Job) -> None:
        """The ``book_slot`` job: payload ``account_id``, ``contact_id``, ``start``."""
        p = job.payload
        acct, contact, start = str(p["account_id"]), str(p["contact_id"]), float(p["start"])
        now = self.clock()
        async with self.db.tx() as conn:
            if await aistore.booking_by_key(conn, job.key) is None:
                await self._book_in(conn, job.key, acct, contact, start, now)
            await complete_in(conn, job, now)

    async def _book_in(self, conn: aiosqlite.Connection, key: str, acct: str, contact: str,
                       start: float, now: float) -> None:
        mine = await bstore.upcoming_booking(conn, acct, contact, now)
        if mine is not None:  # one live booking per contact (module docstring)
            again = mine["start_at"] == start
            text = (self._confirmation(start) if again
                    else self._text("already_booked", mine, mine["start_at"]))
            await self._answer_in(conn, self._manage_out(f"send:{key}", mine, text), contact,
                                  now)
            log.info("%s tapped %s while booked for %s: %s", contact, start, mine["start_at"],
                     "confirmed again" if again else "already booked")
            return
        free = {s.start: s for s in await self.slots_in(conn, acct, now, None)}
        slot = free.get(start)
        booked = slot is not None and await aistore.insert_booking(
            conn, key=key, account_id=acct, contact_id=contact, start_at=slot.start,
            end_at=slot.end, title=self.cfg.title, now=now,
        )
        jobs: list[NewJob] = []
        row = await aistore.booking_by_key(conn, key) if booked else None
        if slot is not None and row is not None:
            when = slot_when(start, self.tz)
            who = await self._who_in(conn, acct, contact)
            note = await self._answer_in(conn, self._manage_out(
                f"send:{key}", row, self._confirmation(start)), who, now)
            jobs.append(notify_job(key, acct, contact, "booking",
                                   f"{who} booked {self.cfg.title} on {when} "
                                   f"({tz_label(self.tz)}){note}", now))
            jobs += self.reminder_jobs(int(row["id"]), acct, contact, slot.start, now)
            if self.on_booked is not None:
                jobs.extend(await self.on_booked(conn, acct, contact, now))
            log.info("%s booked %s", contact, when)
        elif nxt := await self.slots_in(conn, acct, now, self.cfg.offer):
            await self._answer_in(conn, self._offer(
                f"send:{key}", acct, contact,
                self._unavailable(), nxt, None), contact, now)
        else:
            who = await self._who_in(conn, acct, contact)
            note = await self._answer_in(conn, self._no_slots_out(
                f"send:{key}", acct, contact, self.cfg.title), who, now)
            jobs.append(notify_job(key, acct, contact, "booking",
                                   f"{who} tapped a time that is no longer free, and"
                                   f" {self._none_free()}{note}", now))
        await enqueue_in(conn, jobs, now)

    # -- shared by every change ------------------------------------------------------------
    async def refusal_in(self, conn: aiosqlite.Connection, out: Outgoing, now: float
                         ) -> Refusal | None:
        """Why the sending rules would refuse ``out`` (an automated DM) now, or None. The
        same :func:`check_send` the outbox applies again at delivery (a pause does not hold
        an ``out`` with ``before_handoff``, there as here)."""
        f = await sendstore.send_context_in(conn, out.account_id, out.contact_id,
                                            out.comment_id, out.key)
        verdict = check_send(SendFacts(
            kind=out.kind, human=False,
            account_state=f["account_state"] if f is not None else "disconnected",
            last_inbound_at=f["last_inbound_at"] if f is not None else None,
            paused_until=(f["paused_until"] if f is not None and not out.before_handoff
                          else None),
            quick_reply_titles=tuple(t for t, _ in out.quick_replies),
        ), now)
        return None if isinstance(verdict, Clearance) else verdict

    async def _tell_in(self, conn: aiosqlite.Connection, out: Outgoing, now: float
                       ) -> str | None:
        """Queue ``out`` if the rules allow it now; else the reason, and nothing is queued."""
        refusal = await self.refusal_in(conn, out, now)
        if refusal is not None:
            return refusal.detail
        await enqueue_sends(conn, [out], now)
        return None

    async def _answer_in(self, conn: aiosqlite.Connection, out: Outgoing, who: str,
                         now: float) -> str:
        """Queue ``out``, the answer to the contact's own tap; a pause of automation does
        not hold it (see "Taps while automation is paused" in
        :mod:`instaset.booking_lifecycle`), the other sending rules do, at delivery as for
        every send. Returns what the creator's notice about the tap adds
        (:meth:`_note_in`), from those rules as they stand now."""
        out = replace(out, before_handoff=True)
        refusal = await self.refusal_in(conn, out, now)
        await enqueue_sends(conn, [out], now)
        return await self._note_in(conn, out.account_id, str(out.contact_id), who,
                                   refusal.detail if refusal is not None else None, now)

    async def _note_in(self, conn: aiosqlite.Connection, acct: str, contact: str, who: str,
                       why_not: str | None, now: float) -> str:
        """What a creator's notice about a tap adds: why ``who`` could not be told, or that
        they were told although automation is paused for them, or nothing."""
        if why_not is not None:
            return f"; {who} could not be told: {why_not}"
        conv = await aistore.conversation_row(conn, acct, contact)
        paused = conv["paused_until"] if conv is not None else None
        if paused is not None and paused > now:
            return (f"; automation is paused for {who} (a human took over), but this answer"
                    " to their tap went out")
        return ""

    async def _who_in(self, conn: aiosqlite.Connection, acct: str, contact: str) -> str:
        """The contact as the creator's notices name them: @username, else the id."""
        conv = await aistore.conversation_row(conn, acct, contact)
        return f"@{conv['username']}" if conv is not None and conv["username"] else contact

    def _none_free(self) -> str:
        return (f"no slot is free within booking.horizon ({format_duration(self.cfg.horizon)})"
                " (see booking.availability)")

    def _manage_out(self, key: str, row: sqlite3.Row, text: str) -> Outgoing:
        """``text`` about booking ``row``, with its Reschedule/Cancel quick replies."""
        return Outgoing(key=key, kind=SendKind.TEXT, account_id=str(row["account_id"]),
                        contact_id=str(row["contact_id"]), text=text,
                        quick_replies=manage_replies(int(row["id"])))

    def _confirmation(self, start: float) -> str:
        return self.cfg.confirmation.format(when=slot_when(start, self.tz),
                                            timezone=tz_label(self.tz))

    def _unavailable(self) -> str:
        return self.cfg.unavailable.format(timezone=tz_label(self.tz))

    def _no_slots_out(self, key: str, acct: str, contact: str, title: str) -> Outgoing:
        return Outgoing(key=key, kind=SendKind.TEXT, account_id=acct, contact_id=contact,
                        text=self.cfg.no_slots.format(title=title, timezone=tz_label(self.tz)))

    def _text(self, name: str, row: sqlite3.Row, start: float) -> str:
        return str(getattr(self.cfg, name)).format(
            title=row["title"], when=slot_when(start, self.tz), timezone=tz_label(self.tz))

    # -- reminders -------------------------------------------------------------------------
    def reminder_jobs(self, booking_id: int, account_id: str, contact_id: str, start: float,
                      now: float) -> list[NewJob]:
        """One ``booking_reminder`` job per configured offset still ahead of ``now``."""
        jobs: list[NewJob] = []
        for offset in self.cfg.reminders:
            secs = float(offset.total_seconds())
            if start - secs <= now:
                continue
            jobs.append(NewJob(REMINDER_KIND, reminder_key(booking_id, start, secs), {
                "booking_id": booking_id, "account_id": account_id, "contact_id": contact_id,
                "start_at": start, "offset": secs}, run_at=start - secs, max_attempts=4))
        return jobs


__all__ = ["OnBooked", "SlotDesk"]
