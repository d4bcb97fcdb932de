-- 0001: the spine. Accounts, contacts, conversations, messages, raw events, jobs, sends.
-- Times are REAL unix seconds (UTC) computed in Python: SQLite 3.40 has no unixepoch('subsec').

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,          -- Instagram professional account id (entry.id, /me user_id)
    app_scoped_id   TEXT,                      -- /me "id" (a different number)
    username        TEXT,
    state           TEXT NOT NULL DEFAULT 'connected'
                    CHECK (state IN ('connected', 'reconnect_needed', 'disconnected')),
    token_expires_at REAL,
    token_issued_at REAL,
    subscribed_fields TEXT NOT NULL DEFAULT '[]',   -- JSON array
    sandbox         INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
) STRICT;

CREATE TABLE contacts (
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    id              TEXT NOT NULL,             -- the person's Instagram-scoped id (IGSID)
    username        TEXT,
    name            TEXT,
    first_seen_at   REAL NOT NULL,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (account_id, id)
) STRICT;
CREATE INDEX contacts_username ON contacts(username);

-- One conversation per (account, contact). `state` is the engine's ConversationState JSON.
CREATE TABLE conversations (
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT '{}',
    last_inbound_at REAL,                      -- opens the 24 h messaging window
    last_message_at REAL,
    paused_until    REAL,                      -- automation paused (human handoff) until then
    unread          INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (account_id, contact_id),
    FOREIGN KEY (account_id, contact_id) REFERENCES contacts(account_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX conversations_recent ON conversations(account_id, last_message_at DESC);

-- Every event Meta delivered, verbatim (a single-item envelope), deduplicated.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,
    account_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    contact_id      TEXT,
    occurred_at     REAL NOT NULL,
    received_at     REAL NOT NULL,
    processed_at    REAL,
    raw             TEXT NOT NULL
) STRICT;
CREATE INDEX events_account_time ON events(account_id, received_at);

-- Conversation history: inbound messages, our sends, and the creator's own replies.
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    mid             TEXT UNIQUE,               -- Meta's message id (NULL until a send is confirmed)
    direction       TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    sent_by         TEXT NOT NULL CHECK (sent_by IN ('contact', 'automation', 'human')),
    text            TEXT,
    attachments     TEXT NOT NULL DEFAULT '[]',   -- JSON array of {type,url,title}
    reply_to        TEXT,
    event_id        INTEGER REFERENCES events(id) ON DELETE SET NULL,
    created_at      REAL NOT NULL,
    deleted_at      REAL,
    edits           TEXT NOT NULL DEFAULT '[]',   -- JSON array of earlier texts, oldest first
    reactions       TEXT NOT NULL DEFAULT '{}'    -- JSON {"contact": "love"}
) STRICT;
CREATE INDEX messages_thread ON messages(account_id, contact_id, created_at);

-- Durable job queue. key is the idempotency key: a second enqueue with the same key is a no-op.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,
    key             TEXT NOT NULL UNIQUE,
    payload         TEXT NOT NULL DEFAULT '{}',
    state           TEXT NOT NULL DEFAULT 'ready'
                    CHECK (state IN ('ready', 'running', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 6,
    run_at          REAL NOT NULL,
    lease_until     REAL,
    worker          TEXT,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL
) STRICT;
CREATE INDEX jobs_due ON jobs(state, run_at);

-- Outgoing actions: one row per idempotency key, written before the Graph call.
CREATE TABLE sends (
    key             TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    contact_id      TEXT,
    comment_id      TEXT,
    kind            TEXT NOT NULL,             -- text, private_reply, public_reply, media, template, ...
    body            TEXT NOT NULL,             -- JSON request body
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'sent', 'refused', 'failed')),
    sent_by         TEXT NOT NULL DEFAULT 'automation',
    message_id      TEXT,
    reason          TEXT,
    workflow        TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
) STRICT;
CREATE INDEX sends_contact ON sends(account_id, contact_id, created_at);
CREATE INDEX sends_message ON sends(message_id);
CREATE UNIQUE INDEX sends_one_private_reply ON sends(comment_id) WHERE kind = 'private_reply' AND state IN ('in_flight', 'sent');
