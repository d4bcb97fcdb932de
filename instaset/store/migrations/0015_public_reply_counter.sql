-- 0015: public reply turns from a counter, not a count.

-- 0014 counted a workflow's public replies through an index: linear in the replies kept
-- (15 ms per comment at 100,000), inside the worker's write transaction. A counter per
-- account and workflow, bumped with each public reply's send, costs one row. It starts at
-- 0: the turn after an upgrade begins with the first variant.
CREATE TABLE public_reply_turns (
    account_id  TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    turns       INTEGER NOT NULL,
    PRIMARY KEY (account_id, workflow)
) STRICT;

DROP INDEX sends_public_replies;
