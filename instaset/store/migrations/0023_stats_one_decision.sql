-- 0023: stats count a decision once when its workflow has an ai_reply, and a public reply
-- held back because its private reply did not go is not a refusal of its own (review B of
-- session 17, findings 1 and 4).
--
-- Triggers. A decision's sends share the key prefix 'send:{event}:' and the first one
-- stored counts the decision as a trigger (0010). An AI reply is keyed after its job,
-- 'send:ai:{event}:{n}' (its offer of free slots 'send:ai:{event}:{n}:slots'), and the
-- AI's fallback 'send:ai-fallback:{account}:{contact}:{day}:ai:{event}:{n}': all outside
-- that prefix, so a workflow with a message and an ai_reply (a public_reply with an
-- ai_reply private reply, say) counted two triggers, and the fallback of an outage one more
-- (per workflow and per media alike). Here the decision of a send key is, written out
-- where needed (K the key):
--   rtrim(CASE WHEN K LIKE 'send:ai-fallback:%:ai:%' THEN 'send:' || <after ':ai:'>
--              WHEN K LIKE 'send:ai:%:slots' THEN 'send:' || <between 'send:ai:' and ':slots'>
--              WHEN K LIKE 'send:ai:%' THEN 'send:' || <after 'send:ai:'>
--              ELSE K END, '0123456789')
-- so 'send:{event}:0', 'send:ai:{event}:1' and the fallback are one decision: one trigger,
-- at the first of them stored. (An AI reply after a delay, 'send:ai:{event}:{n}:{m}' or
-- 'send:ai:resume:...', counts on its own, as before: the continuation's other sends,
-- 'send:resume:...', are never a decision's, nor a message's chunks '#n'.) The new send's decision is looked for in three ranges of
-- the primary key: 'send:{event}:', 'send:ai:{event}:' and the contact's fallbacks.
--
-- Refusals. When a comment's private reply is refused or fails in the outbox, the public
-- reply that announces it ("Sent it to your DMs!") is stored refused, reason
-- 'private_reply_not_sent'; when the engine refuses the private reply (a comment over 7
-- days old, a media-only reply), the public reply is dropped with no row. So the same miss
-- counted 2 refusals or 1. It is one: the private reply's, under its reason. The public
-- reply's row stays (the thread lists it as not sent); `stats` counts it neither in
-- `refused` nor in `refused_by_reason`.
--
-- The three triggers on sends are replaced (0020's insert and state triggers, 0010's
-- refusal trigger); the state trigger now also follows a reason changed alone. Then the
-- stored figures are corrected for the rows still there, as 0020 did (the rollups keep the
-- counts of rows purged since, which cannot be told apart; those stay as counted, but for
-- the refusals by reason, which are dropped whole for 'private_reply_not_sent').

DROP TRIGGER stats_sends_insert;
DROP TRIGGER stats_sends_state;
DROP TRIGGER stats_sends_refusal;

-- ---------------------------------------------------------------------------------------
-- Corrections (before the new triggers exist).

-- The triggers figure: per bucket, the first sends by the new grouping less those by the
-- old one.
CREATE TEMP TABLE stats_tmp_first AS
SELECT s.account_id, CAST(s.created_at / 3600 AS INTEGER) AS hour,
    coalesce(s.workflow, '') AS workflow, s.sent_by,
    coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                      json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
              FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                WHEN instr(s.key, 'comment:') > 0 THEN 'comment:' || substr(substr(s.key,
                  instr(s.key, 'comment:') + 8), 1, instr(substr(s.key,
                  instr(s.key, 'comment:') + 8) || ':', ':') - 1)
                WHEN instr(s.key, ':live:') > 0 THEN 'live:' || substr(substr(s.key,
                  instr(s.key, ':live:') + 6), 1, instr(substr(s.key,
                  instr(s.key, ':live:') + 6) || ':', ':') - 1) END), '') AS media,
    sum((s.rowid IN (SELECT min(rowid) FROM sends WHERE workflow IS NOT NULL
        AND key NOT LIKE 'send:resume:%' AND instr(key, '#') = 0
        GROUP BY rtrim(CASE
            WHEN key LIKE 'send:ai-fallback:%:ai:%'
                THEN 'send:' || substr(key, instr(key, ':ai:') + 4)
            WHEN key LIKE 'send:ai:%:slots'
                THEN 'send:' || substr(key, 9, length(key) - 14)
            WHEN key LIKE 'send:ai:%' THEN 'send:' || substr(key, 9)
            ELSE key END, '0123456789')))
        - (s.rowid IN (SELECT min(rowid) FROM sends WHERE workflow IS NOT NULL
        AND key NOT LIKE 'send:resume:%' AND instr(key, '#') = 0
        GROUP BY rtrim(key, '0123456789')))) AS triggers
FROM sends s
WHERE s.workflow IS NOT NULL AND s.key NOT LIKE 'send:resume:%' AND instr(s.key, '#') = 0
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, triggers)
SELECT account_id, hour, workflow, sent_by, media, triggers FROM stats_tmp_first
WHERE triggers != 0
ON CONFLICT DO UPDATE SET triggers = triggers + excluded.triggers;
DROP TABLE stats_tmp_first;

-- The refused figure: the held public replies out of it (they are never pending once refused).
INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, refused)
SELECT s.account_id, CAST(s.created_at / 3600 AS INTEGER), coalesce(s.workflow, ''),
    s.sent_by,
    coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                      json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
              FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                WHEN instr(s.key, 'comment:') > 0 THEN 'comment:' || substr(substr(s.key,
                  instr(s.key, 'comment:') + 8), 1, instr(substr(s.key,
                  instr(s.key, 'comment:') + 8) || ':', ':') - 1)
                WHEN instr(s.key, ':live:') > 0 THEN 'live:' || substr(substr(s.key,
                  instr(s.key, ':live:') + 6), 1, instr(substr(s.key,
                  instr(s.key, ':live:') + 6) || ':', ':') - 1) END), ''),
    -count(*)
FROM sends s
WHERE s.state IN ('refused', 'failed') AND s.reason = 'private_reply_not_sent'
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT DO UPDATE SET refused = refused + excluded.refused;

DELETE FROM stats_refusals WHERE reason = 'private_reply_not_sent';

-- ---------------------------------------------------------------------------------------
-- Triggers: 0020's (0010's for the refusals), but for the decision of a key and the held
-- public replies.

CREATE TRIGGER stats_sends_insert AFTER INSERT ON sends BEGIN
    INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, triggers, sent, read,
                            refused, pending)
    VALUES (NEW.account_id, CAST(NEW.created_at / 3600 AS INTEGER), coalesce(NEW.workflow, ''),
        NEW.sent_by,
        coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                          json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
                  FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                    WHEN instr(NEW.key, 'comment:') > 0 THEN 'comment:' || substr(substr(NEW.key,
                      instr(NEW.key, 'comment:') + 8), 1, instr(substr(NEW.key,
                      instr(NEW.key, 'comment:') + 8) || ':', ':') - 1)
                    WHEN instr(NEW.key, ':live:') > 0 THEN 'live:' || substr(substr(NEW.key,
                      instr(NEW.key, ':live:') + 6), 1, instr(substr(NEW.key,
                      instr(NEW.key, ':live:') + 6) || ':', ':') - 1) END), ''),
        -- the decision's first send: no other send of a workflow of the same decision d.g,
        -- in three ranges of the primary key (its own sends, its AI replies, the
        -- contact's AI fallbacks: a few rows)
        NEW.workflow IS NOT NULL AND NEW.key NOT LIKE 'send:resume:%' AND instr(NEW.key, '#') = 0
        AND NOT EXISTS (SELECT 1 FROM (SELECT
            rtrim(CASE
                WHEN NEW.key LIKE 'send:ai-fallback:%:ai:%'
                    THEN 'send:' || substr(NEW.key, instr(NEW.key, ':ai:') + 4)
                WHEN NEW.key LIKE 'send:ai:%:slots'
                    THEN 'send:' || substr(NEW.key, 9, length(NEW.key) - 14)
                WHEN NEW.key LIKE 'send:ai:%' THEN 'send:' || substr(NEW.key, 9)
                ELSE NEW.key END, '0123456789') AS g) d
            JOIN sends x ON (x.key >= d.g AND x.key < d.g || ':')
              OR (x.key >= 'send:ai:' || substr(d.g, 6)
                  AND x.key < 'send:ai:' || substr(d.g, 6) || ':')
              OR (x.key >= 'send:ai-fallback:' || NEW.account_id || ':' || NEW.contact_id || ':'
                  AND x.key < 'send:ai-fallback:' || NEW.account_id || ':' || NEW.contact_id
                              || ';')
            WHERE x.key != NEW.key AND x.workflow IS NOT NULL
              AND x.key NOT LIKE 'send:resume:%' AND instr(x.key, '#') = 0
              AND rtrim(CASE
                      WHEN x.key LIKE 'send:ai-fallback:%:ai:%'
                          THEN 'send:' || substr(x.key, instr(x.key, ':ai:') + 4)
                      WHEN x.key LIKE 'send:ai:%:slots'
                          THEN 'send:' || substr(x.key, 9, length(x.key) - 14)
                      WHEN x.key LIKE 'send:ai:%' THEN 'send:' || substr(x.key, 9)
                      ELSE x.key END, '0123456789') = d.g),
        NEW.state = 'sent' AND NEW.kind IN ('text', 'media', 'template', 'private_reply',
                                            'public_reply'),
        NEW.state = 'sent' AND EXISTS (SELECT 1 FROM messages m JOIN stats_reads r
            ON r.account_id = m.account_id AND r.contact_id = m.contact_id
            WHERE m.mid = NEW.message_id AND m.account_id = NEW.account_id
              AND m.contact_id = NEW.contact_id AND m.created_at <= r.upto),
        NEW.state IN ('refused', 'failed') AND NEW.reason IS NOT 'private_reply_not_sent',
        NEW.state IN ('pending', 'in_flight'))
    ON CONFLICT DO UPDATE SET triggers = triggers + excluded.triggers,
        sent = sent + excluded.sent, read = read + excluded.read,
        refused = refused + excluded.refused, pending = pending + excluded.pending;
    INSERT INTO stats_refusals(account_id, hour, reason, n)
    SELECT NEW.account_id, CAST(NEW.created_at / 3600 AS INTEGER),
           coalesce(NEW.reason, 'unknown'), 1
    WHERE NEW.state IN ('refused', 'failed') AND NEW.reason IS NOT 'private_reply_not_sent'
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER stats_sends_state AFTER UPDATE OF state, message_id, reason ON sends
WHEN OLD.state IS NOT NEW.state OR OLD.message_id IS NOT NEW.message_id
  OR OLD.reason IS NOT NEW.reason BEGIN
    INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, sent, read, refused,
                            pending)
    VALUES (NEW.account_id, CAST(NEW.created_at / 3600 AS INTEGER), coalesce(NEW.workflow, ''),
        NEW.sent_by,
        coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                          json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
                  FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                    WHEN instr(NEW.key, 'comment:') > 0 THEN 'comment:' || substr(substr(NEW.key,
                      instr(NEW.key, 'comment:') + 8), 1, instr(substr(NEW.key,
                      instr(NEW.key, 'comment:') + 8) || ':', ':') - 1)
                    WHEN instr(NEW.key, ':live:') > 0 THEN 'live:' || substr(substr(NEW.key,
                      instr(NEW.key, ':live:') + 6), 1, instr(substr(NEW.key,
                      instr(NEW.key, ':live:') + 6) || ':', ':') - 1) END), ''),
        (NEW.state = 'sent' AND NEW.kind IN ('text', 'media', 'template', 'private_reply',
                                             'public_reply'))
        - (OLD.state = 'sent' AND OLD.kind IN ('text', 'media', 'template', 'private_reply',
                                               'public_reply')),
        (NEW.state = 'sent' AND EXISTS (SELECT 1 FROM messages m JOIN stats_reads r
            ON r.account_id = m.account_id AND r.contact_id = m.contact_id
            WHERE m.mid = NEW.message_id AND m.account_id = NEW.account_id
              AND m.contact_id = NEW.contact_id AND m.created_at <= r.upto))
        - (OLD.state = 'sent' AND EXISTS (SELECT 1 FROM messages m JOIN stats_reads r
            ON r.account_id = m.account_id AND r.contact_id = m.contact_id
            WHERE m.mid = OLD.message_id AND m.account_id = OLD.account_id
              AND m.contact_id = OLD.contact_id AND m.created_at <= r.upto)),
        (NEW.state IN ('refused', 'failed') AND NEW.reason IS NOT 'private_reply_not_sent')
        - (OLD.state IN ('refused', 'failed') AND OLD.reason IS NOT 'private_reply_not_sent'),
        (NEW.state IN ('pending', 'in_flight')) - (OLD.state IN ('pending', 'in_flight')))
    ON CONFLICT DO UPDATE SET sent = sent + excluded.sent, read = read + excluded.read,
        refused = refused + excluded.refused, pending = pending + excluded.pending;
END;

CREATE TRIGGER stats_sends_refusal AFTER UPDATE OF state, reason ON sends
WHEN (OLD.state IN ('refused', 'failed') OR NEW.state IN ('refused', 'failed'))
 AND (OLD.state IS NOT NEW.state OR OLD.reason IS NOT NEW.reason) BEGIN
    INSERT INTO stats_refusals(account_id, hour, reason, n)
    SELECT OLD.account_id, CAST(OLD.created_at / 3600 AS INTEGER),
           coalesce(OLD.reason, 'unknown'), -1
    WHERE OLD.state IN ('refused', 'failed') AND OLD.reason IS NOT 'private_reply_not_sent'
    ON CONFLICT DO UPDATE SET n = n - 1;
    INSERT INTO stats_refusals(account_id, hour, reason, n)
    SELECT NEW.account_id, CAST(NEW.created_at / 3600 AS INTEGER),
           coalesce(NEW.reason, 'unknown'), 1
    WHERE NEW.state IN ('refused', 'failed') AND NEW.reason IS NOT 'private_reply_not_sent'
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
