"""The booking lifecycle: cancel, reschedule and remind, by the creator or by the contact's taps.

- Lifecycle (:meth:`~BookingDesk.cancel`, :meth:`~BookingDesk.reschedule`,
  :meth:`~BookingDesk.offer_reschedule` for the CLI; the ``booking_tap`` job for the contact's
  taps): one transaction per change. A move is an UPDATE under the same unique index, so of
  two moves onto one slot exactly one wins and the other raises :class:`SlotTaken`; a cancel
  frees the slot at once; each change bumps the iCalendar SEQUENCE. The contact is told
  through the outbox (keyed sends) only when the sending rules allow an automated DM now;
  otherwise :class:`Outcome` says why not.
- The ``booking_reminder`` job (one per booking, start and offset) is a no-op for a booking
  cancelled or moved since, for an offset no longer configured and for a reminder overtaken
  by a later one (after downtime), is skipped outside the 24 h window (never sent with a
  tag), and records its outcome once in ``booking_reminders``.
- :class:`BookingTaps` routes the contact's taps on those quick replies to ``booking_tap``.

Taps while automation is paused for the contact (the creator wrote to them in the app, or a
hand-off): a tap takes effect and is answered, and the creator's notice says so. A tap is
the contact's own action on buttons we sent, and its effect is real the moment it is
processed: a slot booked, a booking cancelled or moved. Its answer (the confirmation with
its Reschedule/Cancel buttons, the cancellation, the new times, "no longer free", "no free
time") is the only way the contact learns of it, so it goes out despite the pause, flagged
``before_handoff`` as an approved draft is (the outbox's "a pause does not hold this"). The
notice about the tap (booked, moved, cancelled, nothing free) then adds "automation is paused
for @x (a human took over), but this answer to their tap went out", or, when another rule
refused the answer (the 24 h window, the account), "@x could not be told: why". The other
way, leaving the tap to the human, would leave the contact unanswered and the slot free for
anyone (nothing lets the creator book for them). Nothing else is sent while paused: the
workflows and AI replies stay quiet, and reminders still respect the pause. The creator's own
``bookings cancel|reschedule`` still tell the contact only when no pause is in the way.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

import aiosqlite

from instaset.booking_desk import SlotDesk
from instaset.booking_slots import (
    TAP_KIND,
    Slot,
    event_tap,
    free_slots,
    manage_replies,
    move_payload,
    slot_label,
    slot_when,
    tz_label,
)
from instaset.errors import InstasetError
from instaset.events import Event
from instaset.notify import notify_job
from instaset.outbox import Outgoing, enqueue_sends
from instaset.pipeline import Automation
from instaset.queue import NewJob, enqueue_in
from instaset.rules import SendKind
from instaset.store import ai as aistore
from instaset.store import booking as bstore
from instaset.store.jobs import Job, complete_in

log = logging.getLogger("instaset.booking")


class BookingError(InstasetError):
    """A lifecycle change that cannot be made; the message names the booking and the fix."""


class SlotTaken(BookingError):
    """The new time is booked already (or was booked by a concurrent change)."""


class BookingTaps:
    """Wraps the pipeline's automation: a contact's tap on one of our booking-management
    quick replies enqueues a ``booking_tap`` job instead of running the workflows (its title,
    "Cancel", is not a message to answer). Everything else goes to the wrapped automation."""

    def __init__(self, inner: Automation | None) -> None:
        self.inner = inner

    async def plan(self, conn: aiosqlite.Connection, event: Event, *, is_new_contact: bool,
                   now: float) -> list[NewJob]:
        contact = event.contact_id
        tap = (event_tap(event) if contact is not None and contact != event.account_id
               and not event.is_from_business else None)
        if tap is None or contact is None:
            return (await self.inner.plan(conn, event, is_new_contact=is_new_contact, now=now)
                    if self.inner is not None else [])
        return [NewJob(TAP_KIND, f"btap:{event.dedupe_key}", {
            "account_id": event.account_id, "contact_id": contact, "action": tap.action,
            "booking_id": tap.booking_id, "start": tap.start}, run_at=now)]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a lifecycle change did. ``told``: the message to the contact is queued in the
    outbox; else ``why_not`` says why it could not be (None when it was not asked for)."""

    booking_id: int
    who: str  # @username, or the contact id
    when: str  # the booking's (new) start, local long form
    told: bool
    why_not: str | None = None


def _who(row: sqlite3.Row) -> str:
    return f"@{row['username']}" if row["username"] else str(row["contact_id"])


class BookingDesk(SlotDesk):
    """Offers, books, moves, cancels and reminds (see the module docstrings of
    :mod:`instaset.booking_desk` and this module). Constructed like :class:`SlotDesk`."""

    # -- lifecycle: the creator's commands -------------------------------------------------
    async def cancel(self, booking_id: int, *, reason: str | None = None,
                     notify: bool = True) -> Outcome:
        """Cancel a live booking (its slot is free at once) and, with ``notify``, tell the
        contact if the window allows. Raises :class:`BookingError` for an unknown or
        already cancelled booking."""
        now = self.clock()
        async with self.db.tx() as conn:
            row = await self._live(conn, booking_id)
            return await self._cancel_in(conn, row, by="creator", reason=reason,
                                         notify=notify, now=now)

    async def reschedule(self, booking_id: int, start: float) -> Outcome:
        """Move a live booking to the free slot starting at ``start`` and tell the contact if
        the window allows. Raises :class:`SlotTaken` when that time is booked (also when a
        concurrent change booked it first) and :class:`BookingError` when it is not a free
        slot."""
        now = self.clock()
        async with self.db.tx() as conn:
            row = await self._live(conn, booking_id)
            slot = await self._free_slot_in(conn, row, start, now)
            return await self._move_in(conn, row, slot, by="creator", now=now)

    async def offer_reschedule(self, booking_id: int) -> Outcome:
        """Send the contact the next free times for this booking as quick replies; a tap
        moves the booking (``booking_tap``). Raises :class:`BookingError` when there is no
        free time or the window does not allow a message now (nothing is sent then)."""
        now = self.clock()
        async with self.db.tx() as conn:
            row = await self._live(conn, booking_id)
            key = f"send:booking:{booking_id}:offer:{row['sequence']}:{int(now)}"
            outs = await self._move_offer_in(conn, row, key, None, now)
            if not outs:
                raise BookingError(f"no free time to offer for booking {booking_id} within"
                                   f" {self.cfg.horizon.days} days (booking.horizon)")
            refusal = await self.refusal_in(conn, outs[0], now)
            if refusal is not None:
                raise BookingError(f"cannot offer new times to {_who(row)}: {refusal.detail}")
            await enqueue_sends(conn, outs, now)
            return Outcome(booking_id, _who(row), slot_when(row["start_at"], self.tz), True)

    async def _live(self, conn: aiosqlite.Connection, booking_id: int) -> sqlite3.Row:
        row = await bstore.get_booking(conn, booking_id)
        if row is None:
            raise BookingError(f"no booking {booking_id} (`instaset bookings` lists them with"
                               " their ids)")
        if row["status"] != "booked":
            raise BookingError(f"booking {booking_id} is cancelled already")
        return row

    async def _free_slot_in(self, conn: aiosqlite.Connection, row: sqlite3.Row, start: float,
                            now: float) -> Slot:
        when = f"{slot_when(start, self.tz)} ({tz_label(self.tz)})"
        if start == row["start_at"]:
            raise BookingError(f"booking {row['id']} is at {when} already")
        # Up to the time asked for only (a year of 1-minute slots took seconds to walk).
        slot = next((s for s in await self._move_slots_in(conn, row, now, until=start)
                     if s.start == start), None)
        if slot is not None:
            return slot
        free = await self._move_slots_in(conn, row, now, limit=3)
        other = await bstore.booking_at(conn, row["account_id"], start)
        if other is not None:
            raise SlotTaken(f"{when} is booked already (booking {other['id']}); pick another"
                            f" time, or let {_who(row)} choose with"
                            f" `instaset bookings reschedule {row['id']} --offer`")
        nxt = ", ".join(slot_label(s.start, self.tz) for s in free[:3]) or "none"
        raise BookingError(f"{when} is not a free slot (availability, buffer, notice and"
                           f" horizon in `booking`); the next free ones: {nxt}")

    async def _move_slots_in(self, conn: aiosqlite.Connection, row: sqlite3.Row, now: float,
                             limit: int | None = None, until: float | None = None
                             ) -> list[Slot]:
        """Free slots for moving ``row`` (the first ``limit`` with one; those starting by
        ``until`` with one): its own time does not block its neighbours, and is not offered
        as a new one."""
        end = now + (self.cfg.horizon + self.cfg.slot_length + self.cfg.buffer).total_seconds()
        busy = await bstore.busy_except(conn, row["account_id"], now - 86400, end, row["id"])
        # One more than asked for: the booking's own time may be among them.
        found = free_slots(self.cfg, self.tz, now, busy,
                           limit=None if limit is None else limit + 1, until=until)
        return [s for s in found if s.start != row["start_at"]][:limit]

    async def _move_offer_in(self, conn: aiosqlite.Connection, row: sqlite3.Row, key: str,
                             text: str | None, now: float) -> list[Outgoing]:
        slots = await self._move_slots_in(conn, row, now, self.cfg.offer)
        if not slots:
            return []
        intro = text or self.cfg.reschedule_intro.format(
            title=row["title"], timezone=tz_label(self.tz))
        bid = int(row["id"])
        return [self._offer(key, row["account_id"], row["contact_id"], intro, slots, None,
                            payload=lambda start: move_payload(bid, start))]

    async def _cancel_in(self, conn: aiosqlite.Connection, row: sqlite3.Row, *, by: str,
                         reason: str | None, notify: bool, now: float) -> Outcome:
        bid, acct, contact = int(row["id"]), str(row["account_id"]), str(row["contact_id"])
        await bstore.cancel_booking(conn, bid, by=by, reason=reason, now=now)
        why_not: str | None = None
        if notify:
            text = self._text("cancelled", row, row["start_at"])
            why_not = await self._tell_in(conn, Outgoing(
                key=f"send:booking:{bid}:cancel", kind=SendKind.TEXT, account_id=acct,
                contact_id=contact, text=f"{text} {reason}" if reason else text,
                before_handoff=by == "contact"), now)  # a tap's answer (module docstring)
        when = slot_when(row["start_at"], self.tz)
        jobs = await self.on_booked(conn, acct, contact, now) if self.on_booked else []
        if by == "contact":
            note = await self._note_in(conn, acct, contact, _who(row), why_not, now)
            jobs.append(notify_job(f"booking:{bid}:cancel", acct, contact, "booking",
                                   f"{_who(row)} cancelled {row['title']} on {when}"
                                   f" ({tz_label(self.tz)}){note}", now))
        await enqueue_in(conn, jobs, now)
        log.info("booking %s (%s, %s) cancelled by the %s", bid, contact, when, by)
        return Outcome(bid, _who(row), when, notify and why_not is None, why_not)

    async def _move_in(self, conn: aiosqlite.Connection, row: sqlite3.Row, slot: Slot, *,
                       by: str, now: float) -> Outcome:
        bid, acct, contact = int(row["id"]), str(row["account_id"]), str(row["contact_id"])
        if not await bstore.move_booking(conn, bid, slot.start, slot.end, now):
            other = await bstore.booking_at(conn, acct, slot.start)
            raise SlotTaken(
                f"{slot_when(slot.start, self.tz)} ({tz_label(self.tz)}) was just booked"
                f" (booking {other['id'] if other is not None else '?'}); booking {bid} stays"
                " where it was: pick another time")
        jobs = self.reminder_jobs(bid, acct, contact, slot.start, now)
        # Keyed by the change (the booking's SEQUENCE after it), not by the new time: a
        # booking moved back to a time it had before is a new change, told again; a retried
        # tap job is the same change (its transaction rolled back), told once.
        change = int(row["sequence"]) + 1
        why_not = await self._tell_in(conn, Outgoing(
            key=f"send:booking:{bid}:move:{change}", kind=SendKind.TEXT,
            account_id=acct, contact_id=contact, text=self._text("moved", row, slot.start),
            quick_replies=manage_replies(bid), before_handoff=by == "contact"), now)
        old, new = slot_when(row["start_at"], self.tz), slot_when(slot.start, self.tz)
        if by == "contact":
            note = await self._note_in(conn, acct, contact, _who(row), why_not, now)
            jobs.append(notify_job(f"booking:{bid}:move:{change}", acct, contact,
                                   "booking", f"{_who(row)} moved {row['title']} from {old}"
                                   f" to {new} ({tz_label(self.tz)}){note}", now))
        await enqueue_in(conn, jobs, now)
        log.info("booking %s (%s) moved by the %s from %s to %s", bid, contact, by, old, new)
        return Outcome(bid, _who(row), new, why_not is None, why_not)

    # -- lifecycle: the contact's taps -----------------------------------------------------
    async def on_tap(self, job: Job) -> None:
        """The ``booking_tap`` job (payload ``account_id``, ``contact_id``, ``action``,
        ``booking_id``, ``start``): cancel, offer new times, or move to the tapped time. A
        tap on a booking that is not the contact's does nothing; a new time that is gone by
        now gets the next free ones; a new time for a booking cancelled meanwhile books
        afresh; a tap on a booking that has started changes nothing (:meth:`_started_tap_in`).
        Effects commit with the job's completion."""
        p = job.payload
        acct, contact, action = str(p["account_id"]), str(p["contact_id"]), str(p["action"])
        now = self.clock()
        async with self.db.tx() as conn:
            row = await bstore.get_booking(conn, int(p["booking_id"]))
            if row is None or (row["account_id"], row["contact_id"]) != (acct, contact):
                log.warning("%s tapped %s on booking %s, not theirs: ignored", contact, action,
                            p["booking_id"])
            elif action == "move" and row["status"] != "booked":
                if await aistore.booking_by_key(conn, job.key) is None:
                    await self._book_in(conn, job.key, acct, contact, float(p["start"]), now)
            elif row["status"] != "booked":
                log.info("%s tapped %s on booking %s, cancelled already", contact, action,
                         row["id"])
            elif row["start_at"] <= now:
                await self._started_tap_in(conn, row, action, now)
            elif action == "cancel":
                await self._cancel_in(conn, row, by="contact", reason=None, notify=True, now=now)
            elif action == "reschedule":
                outs = await self._move_offer_in(conn, row, f"send:{job.key}", None, now)
                if outs:
                    await self._answer_in(conn, outs[0], _who(row), now)
                else:
                    await self._none_free_in(conn, job.key, row, "wants to reschedule", now)
            elif action == "move" and float(p["start"]) != row["start_at"]:
                await self._tapped_move_in(conn, job.key, row, float(p["start"]), now)
            await complete_in(conn, job, now)

    async def _started_tap_in(self, conn: aiosqlite.Connection, row: sqlite3.Row, action: str,
                              now: float) -> None:
        """A tap on Cancel, Reschedule or a new time of a booking that has started (or taken
        place): nothing changes, since a call that happened is not "cancelled" (that would
        rewrite the bookings list, the .ics and the stats, and drop the lead from booked to
        engaged), nor moved. The contact gets no answer (a tap on an old message, which no
        configured text covers); the creator is told, once per booking and action, in case
        it means something (a missed call)."""
        what = {"cancel": "Cancel", "reschedule": "Reschedule"}.get(action, "a new time")
        acct, contact = str(row["account_id"]), str(row["contact_id"])
        log.info("%s tapped %s on booking %s, which has started: ignored", contact, action,
                 row["id"])
        await enqueue_in(conn, [notify_job(
            f"booking:{row['id']}:started:{action}", acct, contact, "booking",
            f"{_who(row)} tapped {what} on {row['title']} on"
            f" {slot_when(row['start_at'], self.tz)} ({tz_label(self.tz)}), which has already"
            " started: nothing changed", now)], now)

    async def _tapped_move_in(self, conn: aiosqlite.Connection, key: str, row: sqlite3.Row,
                              start: float, now: float) -> None:
        slot = next((s for s in await self._move_slots_in(conn, row, now, until=start)
                     if s.start == start), None)
        if slot is not None:
            try:
                await self._move_in(conn, row, slot, by="contact", now=now)
                return
            except SlotTaken:
                pass  # taken between the offer and the tap: offer the next ones
        outs = await self._move_offer_in(
            conn, row, f"send:{key}", self._unavailable(), now)
        if outs:
            await self._answer_in(conn, outs[0], _who(row), now)
        else:
            await self._none_free_in(conn, key, row, "tapped a new time that is no longer"
                                     " free for", now)

    async def _none_free_in(self, conn: aiosqlite.Connection, key: str, row: sqlite3.Row,
                            did: str, now: float) -> None:
        """No other free time for the contact's booking ``row``: the contact gets
        ``no_slots`` (the booking stays) and the creator a notice naming them."""
        acct, contact = str(row["account_id"]), str(row["contact_id"])
        note = await self._answer_in(conn, self._no_slots_out(
            f"send:{key}", acct, contact, str(row["title"])), _who(row), now)
        await enqueue_in(conn, [notify_job(
            key, acct, contact, "booking",
            f"{_who(row)} {did} {row['title']} on {slot_when(row['start_at'], self.tz)}"
            f" ({tz_label(self.tz)}), but {self._none_free()}; the booking stays{note}", now)],
            now)


    # -- reminders -------------------------------------------------------------------------
    async def remind(self, job: Job) -> None:
        """The ``booking_reminder`` job: send the reminder if the booking is still live at
        the start it was scheduled for and the rules allow an automated DM now (inside the
        24 h window, automation not paused); otherwise skip. Recorded once per key.

        Skipped too: an offset no longer in ``booking.reminders`` (``unconfigured``: ``[]``
        means none, also for the reminders queued before the change), and a reminder whose
        moment a later one's has passed too (``late``: after downtime the "24 h before" one
        would otherwise go out next to the "1 h before" one, minutes before the call; only
        the latest one due is sent)."""
        p = job.payload
        bid, start, offset = int(p["booking_id"]), float(p["start_at"]), float(p["offset"])
        now = self.clock()
        offsets = {float(o.total_seconds()) for o in self.cfg.reminders}
        async with self.db.tx() as conn:
            row = await bstore.get_booking(conn, bid)
            if row is not None and not await bstore.reminder_recorded(conn, job.key):
                reason: str | None = None
                out = Outgoing(key=f"send:{job.key}", kind=SendKind.TEXT,
                               account_id=row["account_id"], contact_id=row["contact_id"],
                               text=self._text("reminder", row, start))
                if row["status"] != "booked":
                    reason = "cancelled"
                elif row["start_at"] != start:
                    reason = "moved"
                elif now >= start:
                    reason = "past"
                elif offset not in offsets:
                    reason = "unconfigured"
                elif any(o < offset and start - o <= now for o in offsets):
                    reason = "late"
                elif (refusal := await self.refusal_in(conn, out, now)) is not None:
                    reason = refusal.reason
                if reason is None:
                    await enqueue_sends(conn, [out], now)
                else:
                    log.info("reminder %s skipped: %s", job.key, reason)
                await bstore.record_reminder(
                    conn, key=job.key, booking_id=bid, account_id=row["account_id"],
                    contact_id=row["contact_id"], start_at=start, offset_seconds=offset,
                    outcome="sent" if reason is None else "skipped", reason=reason, now=now)
            await complete_in(conn, job, now)

    async def schedule_reminders(self) -> int:
        """Enqueue the reminders of every live upcoming booking (idempotent: keyed), for
        bookings made before reminders existed. Returns how many bookings it looked at."""
        now = self.clock()
        rows = [r for r in await aistore.list_bookings(self.db, since=now)
                if r["status"] == "booked" and r["start_at"] > now]
        jobs = [j for r in rows for j in self.reminder_jobs(
            int(r["id"]), r["account_id"], r["contact_id"], float(r["start_at"]), now)]
        async with self.db.tx() as conn:
            await enqueue_in(conn, jobs, now)
        return len(rows)


__all__ = ["BookingDesk", "BookingError", "BookingTaps", "Outcome", "SlotTaken"]
