-- 0004: AI replies (drafts, calls), lead scores with their reasons, and bookings.

-- A reply the AI wrote that was not sent on its own: draft mode, or a guardrail handed off.
CREATE TABLE ai_drafts (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,        -- the ai_reply job's key
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    comment_id      TEXT,
    text            TEXT NOT NULL,
    intent          TEXT,
    confidence      REAL,
    reason          TEXT,                        -- why it was not sent (draft, a guardrail)
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'discarded')),
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
) STRICT;
CREATE INDEX ai_drafts_contact ON ai_drafts(account_id, contact_id, created_at);

-- One row per model call (each try), for stats: tokens, latency, outcome.
CREATE TABLE ai_calls (
    id              INTEGER PRIMARY KEY,
    job_key         TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    account_id      TEXT NOT NULL,
    contact_id      TEXT,
    backend         TEXT NOT NULL,               -- gemini | offline
    model           TEXT,
    outcome         TEXT NOT NULL,               -- ok, rate_limited, server_error, timeout, ...
    prompt_tokens   INTEGER,
    output_tokens   INTEGER,
    total_tokens    INTEGER,
    latency_ms      REAL NOT NULL,
    error           TEXT,
    created_at      REAL NOT NULL,
    UNIQUE (job_key, attempt)
) STRICT;
CREATE INDEX ai_calls_time ON ai_calls(created_at);

-- Facts behind a lead's score that are not in the history itself: what the AI extracted
-- (with the quoted evidence) and the points of workflow `score` steps.
CREATE TABLE lead_facts (
    key             TEXT PRIMARY KEY,            -- idempotency key
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    source          TEXT NOT NULL CHECK (source IN ('ai', 'workflow')),
    name            TEXT NOT NULL,               -- ai: fact name; workflow: the reason
    value           TEXT,
    evidence        TEXT,                        -- the contact's words behind it
    points          INTEGER,                     -- workflow points
    created_at      REAL NOT NULL
) STRICT;
CREATE INDEX lead_facts_contact ON lead_facts(account_id, contact_id, created_at);

-- The current score of each lead, with its reasons (JSON), as of `rules_hash`.
CREATE TABLE leads (
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    score           INTEGER NOT NULL,
    stage           TEXT NOT NULL,
    reasons         TEXT NOT NULL DEFAULT '[]',
    rules_hash      TEXT NOT NULL,
    qualified_at    REAL,                        -- first time it reached "qualified"
    updated_at      REAL NOT NULL,
    PRIMARY KEY (account_id, contact_id),
    FOREIGN KEY (account_id, contact_id) REFERENCES contacts(account_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX leads_score ON leads(account_id, score DESC);

-- Appointments. At most one live booking per start time and account (the index makes the
-- second of two concurrent taps on one slot fail).
CREATE TABLE bookings (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,        -- idempotency key (the tap's event)
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    start_at        REAL NOT NULL,
    end_at          REAL NOT NULL,
    title           TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'cancelled')),
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
) STRICT;
CREATE UNIQUE INDEX bookings_one_per_slot ON bookings(account_id, start_at)
    WHERE status = 'booked';
CREATE INDEX bookings_time ON bookings(start_at);
