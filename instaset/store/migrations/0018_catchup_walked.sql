-- 0018: the conversations a catch-up run has walked, and when a run last made progress.

-- Meta lists conversations newest first, and a conversation moves to the top when a message
-- arrives. A walk that lists more than once (a second page, a later part, a wait for ingest)
-- can therefore miss a conversation that moved above its position meanwhile. Each
-- conversation a run has walked to its end is recorded here with the generation that did:
-- that generation skips it without a call, and passes from the top walk the conversations
-- updated meanwhile that it has not. A later generation (the run restarted in place) walks
-- it again, but counts it, and its unreadable messages, only once. Removed when the run
-- finishes.
CREATE TABLE catchup_walked (
    run_id          INTEGER NOT NULL REFERENCES catchup_runs(id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    generation      REAL NOT NULL,             -- the latest generation that walked it
    unavailable     INTEGER NOT NULL,          -- its missed messages counted unreadable
    PRIMARY KEY (run_id, conversation_id)
) STRICT;

-- A run that made progress lately is being walked (by `instaset catch-up`, which queues no
-- job): the daemon's check leaves it alone instead of resuming it as chainless.
ALTER TABLE catchup_runs ADD COLUMN progressed_at REAL;
