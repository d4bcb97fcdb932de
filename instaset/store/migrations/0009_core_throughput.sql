-- 0009: the worker's hot path.

-- Events not processed yet (the backlog, normally a handful of rows): a send whose answer
-- was lost looks here for its stored echo (or own-comment webhook) before sending again.
CREATE INDEX events_unprocessed ON events(account_id, contact_id, kind)
    WHERE processed_at IS NULL;
