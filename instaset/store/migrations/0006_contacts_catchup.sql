-- 0006: contacts the creator can correct (change log, cached user profiles) and catching up
-- after downtime (per-account check marks, backfill runs, recovered events).

-- Every change made to a contact by the creator (`contacts set/tag/untag`) or by a profile
-- lookup, oldest first. Deleted with the contact (`contacts forget`).
CREATE TABLE contact_changes (
    id              INTEGER PRIMARY KEY,
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    field           TEXT NOT NULL,             -- name, stage, a captured field, or "tags"
    action          TEXT NOT NULL CHECK (action IN ('set', 'unset', 'tag', 'untag')),
    old_value       TEXT,
    new_value       TEXT,
    changed_by      TEXT NOT NULL,             -- "cli:<os user>" or "profile"
    changed_at      REAL NOT NULL,
    FOREIGN KEY (account_id, contact_id) REFERENCES contacts(account_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX contact_changes_contact ON contact_changes(account_id, contact_id, changed_at);

-- The last User Profile API answer for a contact (only for people who messaged the account).
CREATE TABLE contact_profiles (
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    name            TEXT,
    username        TEXT,
    profile_pic     TEXT,
    follower_count  INTEGER,
    is_user_follow_business INTEGER,           -- 0/1, NULL unknown: they follow the account
    is_business_follow_user INTEGER,           -- 0/1, NULL unknown: the account follows them
    fetched_at      REAL NOT NULL,             -- last lookup (also when it failed)
    error           TEXT,                      -- why the last lookup gave nothing (no_consent...)
    PRIMARY KEY (account_id, contact_id),
    FOREIGN KEY (account_id, contact_id) REFERENCES contacts(account_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX contact_profiles_fetched ON contact_profiles(fetched_at);

-- Per account: what the periodic check last saw. `checked_at` is the daemon's heartbeat (a gap
-- means it was down), `subscribed_at` the last time the webhook subscription was in place,
-- `backfilled_at` the time up to which a completed backfill covered the account.
CREATE TABLE catchup_accounts (
    account_id      TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    checked_at      REAL NOT NULL,
    subscribed_at   REAL,
    backfilled_at   REAL,
    resubscribed_at REAL
) STRICT;

-- One row per backfill through the Conversations API.
CREATE TABLE catchup_runs (
    id              INTEGER PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    reason          TEXT NOT NULL,             -- start, downtime, quiet, resubscribed, first, manual
    since           REAL NOT NULL,             -- messages created from here on were looked at
    started_at      REAL NOT NULL,
    finished_at     REAL,
    api_calls       INTEGER NOT NULL DEFAULT 0,
    conversations   INTEGER NOT NULL DEFAULT 0,
    recovered       INTEGER NOT NULL DEFAULT 0,
    unavailable     INTEGER NOT NULL DEFAULT 0, -- missed, but past the 20 newest of the thread
    error           TEXT
) STRICT;
CREATE INDEX catchup_runs_account ON catchup_runs(account_id, started_at);

-- Events instaset stored from the Conversations API instead of a webhook.
CREATE TABLE recovered_events (
    event_id        INTEGER PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE,
    run_id          INTEGER REFERENCES catchup_runs(id) ON DELETE SET NULL,
    account_id      TEXT NOT NULL,
    contact_id      TEXT,
    mid             TEXT NOT NULL,
    username        TEXT,                      -- as the Conversations API named the contact
    recovered_at    REAL NOT NULL
) STRICT;
CREATE INDEX recovered_events_contact ON recovered_events(account_id, contact_id);
