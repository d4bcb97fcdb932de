-- 0003: accounts, secrets and Meta's callbacks.

-- One row per `instaset connect` attempt: the random `state` of the authorize URL. The
-- callback (daemon or connect's own listener) claims it once and records the outcome, which
-- the waiting `connect` reads. Holds no token.
CREATE TABLE oauth_states (
    state           TEXT PRIMARY KEY,
    redirect_uri    TEXT NOT NULL,
    created_at      REAL NOT NULL,
    expires_at      REAL NOT NULL,
    used_at         REAL,
    outcome         TEXT CHECK (outcome IN ('connected', 'denied', 'failed')),
    account_id      TEXT,
    detail          TEXT                       -- human-readable reason; never a token
) STRICT;

-- Receipts of Meta data-deletion requests. No personal data: not the user id, only what was
-- deleted (row counts per table) and when, so the status page keeps working afterwards.
CREATE TABLE deletion_receipts (
    code            TEXT PRIMARY KEY,          -- the confirmation code given to Meta
    matched         TEXT NOT NULL CHECK (matched IN ('account', 'contact', 'nothing')),
    status          TEXT NOT NULL CHECK (status IN ('completed')),
    summary         TEXT NOT NULL DEFAULT '{}', -- JSON {table: rows deleted}
    requested_at    REAL NOT NULL,
    completed_at    REAL
) STRICT;
