-- 0005: the inbox, stats and tracked links.
-- A tracked link: a URL in one of our sends, rewritten to {public_url}/l/{code}. The code is
-- derived from the send's idempotency key, so re-enqueueing a send reuses its links.
CREATE TABLE links (
    code            TEXT PRIMARY KEY,
    url             TEXT NOT NULL,             -- the destination (http or https only)
    account_id      TEXT NOT NULL,
    contact_id      TEXT,
    send_key        TEXT,
    workflow        TEXT,
    created_at      REAL NOT NULL
) STRICT;
CREATE INDEX links_contact ON links(account_id, contact_id);
CREATE INDEX links_time ON links(created_at);

-- One row per human click (known link-preview crawlers are redirected but not counted).
CREATE TABLE clicks (
    id              INTEGER PRIMARY KEY,
    code            TEXT NOT NULL REFERENCES links(code) ON DELETE CASCADE,
    account_id      TEXT NOT NULL,
    contact_id      TEXT,
    at              REAL NOT NULL
) STRICT;
CREATE INDEX clicks_code ON clicks(code);
CREATE INDEX clicks_time ON clicks(at);

-- Time-range reads for stats. messages_time covers messages per day and time to first
-- response without touching the table; events_stats holds only the few event kinds stats
-- read (comments for per-media figures, read receipts), so ingest of DMs pays nothing for it.
CREATE INDEX messages_time ON messages(created_at, direction, account_id, contact_id);
CREATE INDEX sends_time ON sends(created_at);
CREATE INDEX sends_refused ON sends(created_at) WHERE state IN ('refused', 'failed');
CREATE INDEX events_stats ON events(account_id, received_at)
    WHERE kind IN ('comment', 'live_comment', 'read');
-- Erasing one person (`purge --contact`, Meta's data-deletion callback) finds their events
-- without scanning the table.
CREATE INDEX events_contact ON events(account_id, contact_id);
-- messages.event_id references events(id) ON DELETE SET NULL: without an index, deleting
-- ONE event (purge, erasure) scans every message to find the ones pointing at it.
CREATE INDEX messages_event ON messages(event_id) WHERE event_id IS NOT NULL;
