-- 0016: when a send's try had an outcome that stayed unknown.

-- Set when the answer to a try was lost and no echo came within the wait, so the send may
-- go again: the time that try was made. Meta may have delivered it, and its echo may still
-- come, late: an echo of the send's text that Meta stamped before that time (and a little
-- clock skew) is automation's message, not the creator typing in the app.
ALTER TABLE sends ADD COLUMN unknown_at REAL;
