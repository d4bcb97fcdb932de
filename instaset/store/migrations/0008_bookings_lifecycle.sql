-- 0008: the booking lifecycle: cancel, reschedule, and reminders inside the 24 h window.

-- The iCalendar SEQUENCE of the booking: +1 on every change the contact sees (a move, a
-- cancellation), so a calendar that imported the .ics takes the newer version.
ALTER TABLE bookings ADD COLUMN sequence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE bookings ADD COLUMN cancelled_at REAL;
ALTER TABLE bookings ADD COLUMN cancelled_by TEXT CHECK (cancelled_by IN ('creator', 'contact'));
ALTER TABLE bookings ADD COLUMN cancel_reason TEXT;
CREATE INDEX bookings_contact ON bookings(account_id, contact_id, status);

-- What each reminder job did, once per reminder (its key is the job's key, which names the
-- booking, the start it was scheduled for and its offset): sent, or skipped and why
-- (window_closed, paused, cancelled, moved, past...).
CREATE TABLE booking_reminders (
    key             TEXT PRIMARY KEY,            -- remind:{booking}:{start}:{offset}
    booking_id      INTEGER NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    start_at        REAL NOT NULL,               -- the start the reminder was scheduled for
    offset_seconds  REAL NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('sent', 'skipped')),
    reason          TEXT,                        -- why it was skipped
    created_at      REAL NOT NULL
) STRICT;
CREATE INDEX booking_reminders_booking ON booking_reminders(booking_id);
