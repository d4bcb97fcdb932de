-- 0018: the conversations a catch-up run has walked.

-- Meta lists conversations newest first, and a conversation moves to the top when a message
-- arrives. A walk that lists more than one page (or resumes: a later part, a wait for
-- ingest) can therefore miss a conversation that moved above its position meanwhile. Each
-- conversation a generation of a run has walked to the end is recorded here: a walk skips
-- it without a call, and a last pass from the top walks those updated since the generation
-- started that are not here. Removed when the run finishes.
CREATE TABLE catchup_walked (
    run_id          INTEGER NOT NULL REFERENCES catchup_runs(id) ON DELETE CASCADE,
    generation      REAL NOT NULL,             -- the run's started_at when it was walked
    conversation_id TEXT NOT NULL,
    PRIMARY KEY (run_id, generation, conversation_id)
) STRICT;
