-- 0019: catchup_walked per run, with what each conversation counted; runs' progressed_at.

-- A run restarted in place (a new generation) walks every conversation again, and counted
-- it, and its unreadable messages, again: catchup_walked is now one row per conversation of
-- a run, with the latest generation that walked it and the unreadable messages counted for
-- it, so a later generation counts only what is new. The rows of 0018 are kept (their
-- unreadable messages as 0: a walk again may count those once more).
ALTER TABLE catchup_walked RENAME TO catchup_walked_0018;
CREATE TABLE catchup_walked (
    run_id          INTEGER NOT NULL REFERENCES catchup_runs(id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    generation      REAL NOT NULL,             -- the latest generation that walked it
    unavailable     INTEGER NOT NULL,          -- its missed messages counted unreadable
    PRIMARY KEY (run_id, conversation_id)
) STRICT;
INSERT INTO catchup_walked(run_id, conversation_id, generation, unavailable)
    SELECT run_id, conversation_id, max(generation), 0 FROM catchup_walked_0018
    GROUP BY run_id, conversation_id;
DROP TABLE catchup_walked_0018;

-- When a run last started, restarted, waited or walked a conversation. One that did so
-- lately is being walked (by `instaset catch-up`, which queues no job): the daemon's check
-- leaves it alone instead of resuming it as chainless.
ALTER TABLE catchup_runs ADD COLUMN progressed_at REAL;
