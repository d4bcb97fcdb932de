-- 0022: which message a value came from, so that the contact's unsend takes it back.
--
-- An unsend (Meta's is_deleted) takes the message's text out of the history; the values
-- derived from it must go too, and only those: an AI-extracted lead fact and a field an
-- `ask:` step captured are otherwise not tied to a message (the fact's evidence is a quote
-- that other messages may share; a field's value may be normalised, or set again since by
-- a `set:` step, `contacts set` or a later answer).

-- The contact's message an AI fact was extracted from (NULL: from a comment, or recorded
-- before 0022; a workflow `score` step's points have none).
ALTER TABLE lead_facts ADD COLUMN mid TEXT;
CREATE INDEX lead_facts_mid ON lead_facts(mid) WHERE mid IS NOT NULL;

-- The message whose answer a field of the conversation's state (`fields` in
-- conversations.state) holds: written with the capture, removed when anything else sets or
-- removes that field. One row per field; no text of its own.
CREATE TABLE captured_fields (
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    field           TEXT NOT NULL,
    mid             TEXT NOT NULL,
    captured_at     REAL NOT NULL,
    PRIMARY KEY (account_id, contact_id, field)
) STRICT;
CREATE INDEX captured_fields_mid ON captured_fields(mid);
