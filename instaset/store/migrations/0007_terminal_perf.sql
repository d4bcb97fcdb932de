-- 0007: speed of `instaset stats` and `instaset purge` on large databases.

-- Unsent messages that still hold their content (the purge scrubs them whatever their age):
-- partial, so it holds only those few rows and ingest of ordinary messages pays nothing;
-- its WHERE is instaset.store.retention.UNSENT_UNSCRUBBED, word for word.
CREATE INDEX messages_unsent ON messages(id)
    WHERE deleted_at IS NOT NULL AND (text IS NOT NULL OR attachments != '[]' OR edits != '[]');
