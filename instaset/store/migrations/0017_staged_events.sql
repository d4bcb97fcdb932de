-- 0017: staged events (ingest under load).

-- Webhook events acknowledged while ingest is under load (a batch of several requests, or
-- while rows are staged), committed here durably before the 200, without the indexing that
-- storing them in events costs. The ingest writer moves them, in arrival order, into events
-- with their process_event jobs (one transaction per chunk) as soon as no request waits
-- for its answer, and at least every fraction of a second under sustained load; a restart
-- moves what a crash left. A dedupe key is unique here as in events, and a key already in
-- events is not staged, so a redelivery is refused at once either way.
CREATE TABLE staged_events (
    id              INTEGER PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,
    account_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    contact_id      TEXT,
    occurred_at     REAL NOT NULL,
    received_at     REAL NOT NULL,
    raw             TEXT NOT NULL
) STRICT;
