-- 0020: stats credit a live comment's sends to the live video, and a media's comments
-- leave out the account's own (audit s16 findings 6 and 7).
--
-- 0010 found the media of a send (and of a tracked link's click) only through
-- 'comment:{id}' in the send key, so the sends a live comment caused ('live:{id}' in the
-- key, the dedupe key of a live comment event) counted under no media. And it counted every
-- processed comment, the account's own too: each public reply comes back as a comments
-- webhook, so a comment-to-DM workflow with a public reply doubled a post's comments.
--
-- The triggers that look up a send's media are replaced by the same ones with both keys;
-- the comment trigger skips the account's own comments (contact_id = account_id: a comment's
-- contact is its author, instaset/events.py). Then what 0010 counted is corrected in place,
-- for the rows still there (not rebuilt: the rollups keep the counts of rows purged since,
-- which cannot be told apart; those stay as they were counted).
--
-- The comment event a send key names, written out where needed as (K the key)
--   CASE WHEN instr(K, 'comment:') > 0 THEN 'comment:' || <the id after it>
--        WHEN instr(K, ':live:') > 0 THEN 'live:' || <the id after it> END
-- (':live:' with both colons: a whole segment of the key, not a message id ending in 'live').

DROP TRIGGER stats_sends_insert;
DROP TRIGGER stats_sends_state;
DROP TRIGGER stats_messages_out;
DROP TRIGGER stats_events_read;
DROP TRIGGER stats_events_comment;
DROP TRIGGER stats_clicks_insert;

-- ---------------------------------------------------------------------------------------
-- Corrections (before the new triggers exist). Same definitions as 0010's backfill.

-- Sends of a live comment, from no media to the live video's: per bucket, what each of
-- them added (0010's backfill definitions), taken from media '' and given to the media.
CREATE TEMP TABLE stats_tmp_live AS
SELECT s.account_id, CAST(s.created_at / 3600 AS INTEGER) AS hour,
    coalesce(s.workflow, '') AS workflow, s.sent_by,
    (SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                 json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
     FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = 'live:' || substr(substr(s.key,
       instr(s.key, ':live:') + 6), 1, instr(substr(s.key, instr(s.key, ':live:') + 6)
       || ':', ':') - 1)) AS media,
    coalesce(sum(s.rowid IN (SELECT min(rowid) FROM sends WHERE workflow IS NOT NULL
                    AND key NOT LIKE 'send:resume:%' AND instr(key, '#') = 0
                    AND instr(key, 'comment:') = 0 AND instr(key, ':live:') > 0
                    GROUP BY rtrim(key, '0123456789'))), 0) AS triggers,
    coalesce(sum(s.state = 'sent' AND s.kind IN ('text', 'media', 'template', 'private_reply',
                                                 'public_reply')), 0) AS sent,
    coalesce(sum(s.state = 'sent' AND EXISTS (SELECT 1 FROM messages m
        WHERE m.mid = s.message_id AND m.account_id = s.account_id
          AND m.contact_id = s.contact_id AND m.created_at <= r.upto)), 0) AS read,
    coalesce(sum(s.state IN ('refused', 'failed')), 0) AS refused,
    coalesce(sum(s.state IN ('pending', 'in_flight')), 0) AS pending
FROM sends s LEFT JOIN stats_reads r
    ON r.account_id = s.account_id AND r.contact_id = s.contact_id
WHERE instr(s.key, 'comment:') = 0 AND instr(s.key, ':live:') > 0
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, triggers, sent, read,
                        refused, pending)
SELECT account_id, hour, workflow, sent_by, '', -triggers, -sent, -read, -refused, -pending
FROM stats_tmp_live WHERE media IS NOT NULL
ON CONFLICT DO UPDATE SET triggers = triggers + excluded.triggers,
    sent = sent + excluded.sent, read = read + excluded.read,
    refused = refused + excluded.refused, pending = pending + excluded.pending;
INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, triggers, sent, read,
                        refused, pending)
SELECT account_id, hour, workflow, sent_by, media, triggers, sent, read, refused, pending
FROM stats_tmp_live WHERE media IS NOT NULL
ON CONFLICT DO UPDATE SET triggers = triggers + excluded.triggers,
    sent = sent + excluded.sent, read = read + excluded.read,
    refused = refused + excluded.refused, pending = pending + excluded.pending;
DROP TABLE stats_tmp_live;

-- Clicks on links of those sends, likewise.
CREATE TEMP TABLE stats_tmp_live AS
SELECT c.account_id, CAST(c.at / 3600 AS INTEGER) AS hour, coalesce(l.workflow, '') AS workflow,
    (SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                 json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
     FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = 'live:' || substr(substr(
       l.send_key, instr(l.send_key, ':live:') + 6), 1, instr(substr(l.send_key,
       instr(l.send_key, ':live:') + 6) || ':', ':') - 1)) AS media,
    count(*) AS clicks
FROM clicks c JOIN links l ON l.code = c.code
WHERE instr(l.send_key, 'comment:') = 0 AND instr(l.send_key, ':live:') > 0
GROUP BY 1, 2, 3, 4;

INSERT INTO stats_clicks(account_id, hour, workflow, media, clicks)
SELECT account_id, hour, workflow, '', -clicks FROM stats_tmp_live WHERE media IS NOT NULL
ON CONFLICT DO UPDATE SET clicks = clicks + excluded.clicks;
INSERT INTO stats_clicks(account_id, hour, workflow, media, clicks)
SELECT account_id, hour, workflow, media, clicks FROM stats_tmp_live WHERE media IS NOT NULL
ON CONFLICT DO UPDATE SET clicks = clicks + excluded.clicks;
DROP TABLE stats_tmp_live;

-- The account's own comments: out of the comments of their media...
INSERT INTO stats_media(account_id, hour, media, comments)
SELECT account_id, CAST(received_at / 3600 AS INTEGER), media, -count(*) FROM (
    SELECT e.account_id, e.received_at, CAST(coalesce(
        json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
        json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT) AS media
    FROM events e
    WHERE e.kind IN ('comment', 'live_comment', 'read') AND e.kind != 'read'
      AND e.processed_at IS NOT NULL AND json_valid(e.raw)
      AND e.contact_id = e.account_id)
WHERE media IS NOT NULL
GROUP BY 1, 2, 3
ON CONFLICT DO UPDATE SET comments = comments + excluded.comments;

-- ... and the account out of their commenters (with its level, were it ever above 0).
INSERT INTO stats_media(account_id, hour, media, leads, qualified, booked)
SELECT k.account_id, CAST(k.last_at / 3600 AS INTEGER), k.media, -sum(c.lv >= 1),
       -sum(c.lv >= 2), -sum(c.lv >= 3)
FROM stats_commenters k JOIN (SELECT account_id, contact_id,
        CASE coalesce(json_extract(state, '$.stage'), 'new') WHEN 'booked' THEN 3
        WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1 FROM
        json_each(state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv
      FROM conversations WHERE contact_id = account_id) c
  ON c.account_id = k.account_id AND c.contact_id = k.contact_id
WHERE k.contact_id = k.account_id AND c.lv > 0
GROUP BY 1, 2, 3
ON CONFLICT DO UPDATE SET leads = leads + excluded.leads,
    qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
DELETE FROM stats_commenters WHERE contact_id = account_id;

-- ---------------------------------------------------------------------------------------
-- Triggers: 0010's, but for the key lookup (live comments) and the account's own comments.

-- sends ------------------------------------------------------------------------------------
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
        -- the decision's first send: no other send of a workflow with the same key prefix
        -- (a range of the primary key: the decision's few sends)
        NEW.workflow IS NOT NULL AND NEW.key NOT LIKE 'send:resume:%' AND instr(NEW.key, '#') = 0
        AND NOT EXISTS (SELECT 1 FROM sends x
            WHERE x.key >= rtrim(NEW.key, '0123456789')
              AND x.key < rtrim(NEW.key, '0123456789') || ':'
              AND x.key != NEW.key AND x.workflow IS NOT NULL
              AND rtrim(x.key, '0123456789') = rtrim(NEW.key, '0123456789')),
        NEW.state = 'sent' AND NEW.kind IN ('text', 'media', 'template', 'private_reply',
                                            'public_reply'),
        NEW.state = 'sent' AND EXISTS (SELECT 1 FROM messages m JOIN stats_reads r
            ON r.account_id = m.account_id AND r.contact_id = m.contact_id
            WHERE m.mid = NEW.message_id AND m.account_id = NEW.account_id
              AND m.contact_id = NEW.contact_id AND m.created_at <= r.upto),
        NEW.state IN ('refused', 'failed'),
        NEW.state IN ('pending', 'in_flight'))
    ON CONFLICT DO UPDATE SET triggers = triggers + excluded.triggers,
        sent = sent + excluded.sent, read = read + excluded.read,
        refused = refused + excluded.refused, pending = pending + excluded.pending;
    INSERT INTO stats_refusals(account_id, hour, reason, n)
    SELECT NEW.account_id, CAST(NEW.created_at / 3600 AS INTEGER),
           coalesce(NEW.reason, 'unknown'), 1
    WHERE NEW.state IN ('refused', 'failed')
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER stats_sends_state AFTER UPDATE OF state, message_id ON sends
WHEN OLD.state IS NOT NEW.state OR OLD.message_id IS NOT NEW.message_id BEGIN
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
        (NEW.state IN ('refused', 'failed')) - (OLD.state IN ('refused', 'failed')),
        (NEW.state IN ('pending', 'in_flight')) - (OLD.state IN ('pending', 'in_flight')))
    ON CONFLICT DO UPDATE SET sent = sent + excluded.sent, read = read + excluded.read,
        refused = refused + excluded.refused, pending = pending + excluded.pending;
END;

-- messages ---------------------------------------------------------------------------------
CREATE TRIGGER stats_messages_out AFTER INSERT ON messages WHEN NEW.direction = 'out' BEGIN
    INSERT INTO stats_messages(account_id, hour, n_out) VALUES (NEW.account_id,
        CAST(NEW.created_at / 3600 AS INTEGER), 1)
    ON CONFLICT DO UPDATE SET n_out = n_out + 1;
    -- our answer ends the wait (bucket: see stats_waits_hour)
    INSERT INTO stats_waits_hour(account_id, hour, bucket, n)
    SELECT account_id, CAST(since_at / 3600 AS INTEGER), d - d % CASE
        WHEN d < 200 THEN 1 WHEN d < 500 THEN 5 WHEN d < 1000 THEN 10 WHEN d < 2000 THEN 20
        WHEN d < 5000 THEN 50 WHEN d < 10000 THEN 100 WHEN d < 20000 THEN 200
        WHEN d < 50000 THEN 500 WHEN d < 100000 THEN 1000 WHEN d < 200000 THEN 2000
        WHEN d < 500000 THEN 5000 WHEN d < 1000000 THEN 10000 WHEN d < 2000000 THEN 20000
        WHEN d < 5000000 THEN 50000 WHEN d < 10000000 THEN 100000
        WHEN d < 20000000 THEN 200000 WHEN d < 50000000 THEN 500000 ELSE 1000000 END, 1
    FROM (SELECT account_id, since_at,
                 CAST(round((NEW.created_at - since_at) * 10) AS INTEGER) AS d
          FROM stats_pending WHERE account_id = NEW.account_id
            AND contact_id = NEW.contact_id AND since_at <= NEW.created_at)
    WHERE true
    ON CONFLICT DO UPDATE SET n = n + 1;
    INSERT INTO stats_waits_day(account_id, day, bucket, n)
    SELECT account_id, CAST(since_at / 86400 AS INTEGER), d - d % CASE
        WHEN d < 200 THEN 1 WHEN d < 500 THEN 5 WHEN d < 1000 THEN 10 WHEN d < 2000 THEN 20
        WHEN d < 5000 THEN 50 WHEN d < 10000 THEN 100 WHEN d < 20000 THEN 200
        WHEN d < 50000 THEN 500 WHEN d < 100000 THEN 1000 WHEN d < 200000 THEN 2000
        WHEN d < 500000 THEN 5000 WHEN d < 1000000 THEN 10000 WHEN d < 2000000 THEN 20000
        WHEN d < 5000000 THEN 50000 WHEN d < 10000000 THEN 100000
        WHEN d < 20000000 THEN 200000 WHEN d < 50000000 THEN 500000 ELSE 1000000 END, 1
    FROM (SELECT account_id, since_at,
                 CAST(round((NEW.created_at - since_at) * 10) AS INTEGER) AS d
          FROM stats_pending WHERE account_id = NEW.account_id
            AND contact_id = NEW.contact_id AND since_at <= NEW.created_at)
    WHERE true
    ON CONFLICT DO UPDATE SET n = n + 1;
    DELETE FROM stats_pending WHERE account_id = NEW.account_id
        AND contact_id = NEW.contact_id AND since_at <= NEW.created_at;
    -- a send recorded as sent before its message row: read already?
    INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, read)
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
        1
    FROM sends s JOIN stats_reads r ON r.account_id = NEW.account_id
        AND r.contact_id = NEW.contact_id
    WHERE NEW.mid IS NOT NULL AND s.message_id = NEW.mid AND s.state = 'sent'
      AND s.account_id = NEW.account_id AND s.contact_id = NEW.contact_id
      AND NEW.created_at <= r.upto
    ON CONFLICT DO UPDATE SET read = read + 1;
END;

-- events: read receipts and comments ------------------------------------------------------
CREATE TRIGGER stats_events_read AFTER UPDATE OF processed_at ON events
WHEN NEW.kind = 'read' AND OLD.processed_at IS NULL AND NEW.processed_at IS NOT NULL
 AND json_valid(NEW.raw) BEGIN
    INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, read)
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
        count(*)
    FROM (SELECT m.account_id AS a, m.contact_id AS c, m.created_at AS t,
                 (SELECT upto FROM stats_reads r WHERE r.account_id = m.account_id
                    AND r.contact_id = m.contact_id) AS old
          FROM messages m WHERE m.mid = coalesce(
              json_extract(NEW.raw, '$.entry[0].messaging[0].read.mid'),
              json_extract(NEW.raw, '$.entry[0].standby[0].read.mid'),
              json_extract(NEW.raw, '$.entry[0].changes[0].value.read.mid'))) x
    JOIN messages o ON o.account_id = x.a AND o.contact_id = x.c
        AND o.created_at <= x.t AND o.created_at > coalesce(x.old, -1e300)
    JOIN sends s ON s.message_id = o.mid
    WHERE o.direction = 'out' AND s.state = 'sent' AND s.account_id = x.a
      AND s.contact_id = x.c
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT DO UPDATE SET read = read + excluded.read;
    INSERT INTO stats_reads(account_id, contact_id, upto)
    SELECT m.account_id, m.contact_id, m.created_at FROM messages m WHERE m.mid = coalesce(
        json_extract(NEW.raw, '$.entry[0].messaging[0].read.mid'),
        json_extract(NEW.raw, '$.entry[0].standby[0].read.mid'),
        json_extract(NEW.raw, '$.entry[0].changes[0].value.read.mid'))
    ON CONFLICT DO UPDATE SET upto = max(upto, excluded.upto);
END;

-- A comment by someone else than the account (see 0010 for the rest).
CREATE TRIGGER stats_events_comment AFTER UPDATE OF processed_at ON events
WHEN NEW.kind IN ('comment', 'live_comment') AND OLD.processed_at IS NULL
 AND NEW.processed_at IS NOT NULL AND json_valid(NEW.raw)
 AND NEW.contact_id IS NOT NEW.account_id BEGIN
    INSERT INTO stats_media(account_id, hour, media, comments)
    SELECT NEW.account_id, CAST(NEW.received_at / 3600 AS INTEGER), k.media, 1
    FROM (SELECT CAST(coalesce(json_extract(NEW.raw, '$.entry[0].changes[0].value.media.id'),
                      json_extract(NEW.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
                 AS media) k
    WHERE k.media IS NOT NULL
    ON CONFLICT DO UPDATE SET comments = comments + 1;
    INSERT INTO stats_media(account_id, hour, media, leads, qualified, booked)
    SELECT NEW.account_id, CAST(p.last_at / 3600 AS INTEGER), p.media,
           -(v.lv >= 1), -(v.lv >= 2), -(v.lv >= 3)
    FROM stats_commenters p, (SELECT coalesce((SELECT CASE coalesce(json_extract(state,
            '$.stage'), 'new') WHEN 'booked' THEN 3 WHEN 'customer' THEN 3
            WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1 FROM json_each(state,
            '$.tags') WHERE value = 'lead') ELSE 1 END
          FROM conversations WHERE account_id = NEW.account_id
            AND contact_id = NEW.contact_id), 0) AS lv) v
    WHERE p.account_id = NEW.account_id AND p.contact_id = NEW.contact_id
      AND p.media = CAST(coalesce(json_extract(NEW.raw, '$.entry[0].changes[0].value.media.id'),
                          json_extract(NEW.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
      AND p.last_at < NEW.received_at AND v.lv > 0
    ON CONFLICT DO UPDATE SET leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
    INSERT INTO stats_media(account_id, hour, media, leads, qualified, booked)
    SELECT NEW.account_id, CAST(NEW.received_at / 3600 AS INTEGER), k.media,
           v.lv >= 1, v.lv >= 2, v.lv >= 3
    FROM (SELECT CAST(coalesce(json_extract(NEW.raw, '$.entry[0].changes[0].value.media.id'),
                      json_extract(NEW.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
                 AS media) k,
         (SELECT coalesce((SELECT CASE coalesce(json_extract(state,
            '$.stage'), 'new') WHEN 'booked' THEN 3 WHEN 'customer' THEN 3
            WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1 FROM json_each(state,
            '$.tags') WHERE value = 'lead') ELSE 1 END
          FROM conversations WHERE account_id = NEW.account_id
            AND contact_id = NEW.contact_id), 0) AS lv) v
    WHERE k.media IS NOT NULL AND NEW.contact_id IS NOT NULL AND v.lv > 0
      AND NOT EXISTS (SELECT 1 FROM stats_commenters p WHERE p.account_id = NEW.account_id
          AND p.contact_id = NEW.contact_id AND p.media = k.media
          AND p.last_at >= NEW.received_at)
    ON CONFLICT DO UPDATE SET leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
    INSERT INTO stats_commenters(account_id, contact_id, media, last_at)
    SELECT NEW.account_id, NEW.contact_id, k.media, NEW.received_at
    FROM (SELECT CAST(coalesce(json_extract(NEW.raw, '$.entry[0].changes[0].value.media.id'),
                      json_extract(NEW.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
                 AS media) k
    WHERE k.media IS NOT NULL AND NEW.contact_id IS NOT NULL
    ON CONFLICT DO UPDATE SET last_at = max(last_at, excluded.last_at);
END;

-- clicks -----------------------------------------------------------------------------------
CREATE TRIGGER stats_clicks_insert AFTER INSERT ON clicks BEGIN
    INSERT INTO stats_clicks(account_id, hour, workflow, media, clicks)
    SELECT NEW.account_id, CAST(NEW.at / 3600 AS INTEGER), coalesce(l.workflow, ''),
        coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                          json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
                  FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                    WHEN instr(l.send_key, 'comment:') > 0 THEN 'comment:' || substr(substr(l.send_key,
                      instr(l.send_key, 'comment:') + 8), 1, instr(substr(l.send_key,
                      instr(l.send_key, 'comment:') + 8) || ':', ':') - 1)
                    WHEN instr(l.send_key, ':live:') > 0 THEN 'live:' || substr(substr(l.send_key,
                      instr(l.send_key, ':live:') + 6), 1, instr(substr(l.send_key,
                      instr(l.send_key, ':live:') + 6) || ':', ':') - 1) END), ''),
        1
    FROM links l WHERE l.code = NEW.code
    ON CONFLICT DO UPDATE SET clicks = clicks + 1;
END;
