-- 0002: what the creator is told (hot leads, handoffs, refused sends, broken tokens).
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,        -- idempotency key
    account_id      TEXT,
    contact_id      TEXT,
    kind            TEXT NOT NULL,               -- handoff, notify, refused, token, lead ...
    text            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    delivered_at    REAL
) STRICT;
CREATE INDEX notifications_recent ON notifications(created_at);
