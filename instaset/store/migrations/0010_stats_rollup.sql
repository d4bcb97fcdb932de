-- 0010: `instaset stats` from rollups kept up to date on write.
--
-- The funnel used to be computed by scanning the period's sends, messages, events and every
-- conversation (seconds on 1M messages). These tables hold the same figures as counters,
-- moved by the triggers below inside the very statement that changes a send, a message, an
-- event, a click or a conversation: atomic with the write, for every writer (daemon, inbox
-- reply, drafts), with only indexed lookups (no scan) on the hot path. The backfill at the end
-- gives an existing database its history. Definitions: instaset/stats.py's docstring; the
-- raw-scan reference they must equal: instaset/store/stats.py (`*_scan`, tests/test_stats*).
--
-- Time buckets: hour = CAST(t / 3600 AS INTEGER) (UTC), day = CAST(t / 86400 AS INTEGER).
-- Text keys use '' for "none" (a NULL in a primary key would never conflict, so an upsert
-- would add rows instead of counting). Every table has account_id: removing an account
-- (store/accounts.py) takes its rows. Tables with contact_id hold per-contact facts and go
-- with the contact (erasure). Aggregates are anonymous counts and stay (history).
--
-- A *level* sums up a conversation's stage (state JSON): 3 booked (stage booked/customer),
-- 2 qualified, 1 lead (any other stage than 'new', or the tag 'lead'), 0 otherwise. Written
-- out where needed as
--   CASE coalesce(json_extract(S, '$.stage'), 'new') WHEN 'booked' THEN 3 WHEN 'customer'
--   THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1 FROM json_each(S,
--   '$.tags') WHERE value = 'lead') ELSE 1 END
-- leads = level >= 1, qualified = level >= 2, booked = level >= 3.

-- The send funnel per hour of the send's creation.
CREATE TABLE stats_sends (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    workflow        TEXT NOT NULL,             -- '' no workflow
    sent_by         TEXT NOT NULL,
    media           TEXT NOT NULL,             -- the commented media of the send, '' none
    triggers        INTEGER NOT NULL DEFAULT 0, -- first send of a decision (see below)
    sent            INTEGER NOT NULL DEFAULT 0, -- state sent, a message kind
    read            INTEGER NOT NULL DEFAULT 0, -- state sent, its message read by now
    refused         INTEGER NOT NULL DEFAULT 0, -- state refused or failed
    pending         INTEGER NOT NULL DEFAULT 0, -- state pending or in_flight
    PRIMARY KEY (hour, account_id, workflow, sent_by, media)
) STRICT;

-- Refused or failed sends per hour of creation and reason ('unknown' when none).
CREATE TABLE stats_refusals (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    n               INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id, reason)
) STRICT;

-- Per conversation: the newest of our messages a read receipt named (its created_at).
CREATE TABLE stats_reads (
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    upto            REAL NOT NULL,
    PRIMARY KEY (account_id, contact_id)
) STRICT;

-- Messages in and out per hour.
CREATE TABLE stats_messages (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    n_in            INTEGER NOT NULL DEFAULT 0,
    n_out           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id)
) STRICT;

-- Time to first response. A *wait* starts when the person writes and nothing of theirs is
-- waiting for an answer (a row here), and ends at our next message (automation or human).
CREATE TABLE stats_pending (
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    since_at        REAL NOT NULL,             -- the first unanswered message of the person
    PRIMARY KEY (account_id, contact_id)
) STRICT;

-- Answered waits as histograms, by the hour (and the day) the wait started. bucket: the wait
-- in tenths of a second, rounded down to its step (1 below 20 s, then 5/10/20/50/100... :
-- at most 2.5 % of the wait). Days keep a long period to ~30 rows per bucket; hours give the
-- partial first day.
CREATE TABLE stats_waits_hour (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    bucket          INTEGER NOT NULL,
    n               INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id, bucket)
) STRICT;
CREATE TABLE stats_waits_day (
    account_id      TEXT NOT NULL,
    day             INTEGER NOT NULL,
    bucket          INTEGER NOT NULL,
    n               INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, account_id, bucket)
) STRICT;

-- Conversations by the hour of their updated_at, with their current level.
CREATE TABLE stats_conversations (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    contacts        INTEGER NOT NULL DEFAULT 0,
    leads           INTEGER NOT NULL DEFAULT 0,
    qualified       INTEGER NOT NULL DEFAULT 0,
    booked          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id)
) STRICT;

-- Contacts per workflow, by the hour the workflow last fired for them (conversation state
-- '$.fired'), with their current level.
CREATE TABLE stats_fired (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    workflow        TEXT NOT NULL,
    contacts        INTEGER NOT NULL DEFAULT 0,
    leads           INTEGER NOT NULL DEFAULT 0,
    qualified       INTEGER NOT NULL DEFAULT 0,
    booked          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id, workflow)
) STRICT;

-- Per commenter and media: their last comment (received_at).
CREATE TABLE stats_commenters (
    account_id      TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    media           TEXT NOT NULL,
    last_at         REAL NOT NULL,
    PRIMARY KEY (account_id, contact_id, media)
) STRICT;
CREATE INDEX stats_commenters_time ON stats_commenters(last_at);

-- Per media: comments by the hour they were received; commenters' levels by the hour of
-- their last comment on it.
CREATE TABLE stats_media (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    media           TEXT NOT NULL,
    comments        INTEGER NOT NULL DEFAULT 0,
    leads           INTEGER NOT NULL DEFAULT 0,
    qualified       INTEGER NOT NULL DEFAULT 0,
    booked          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id, media)
) STRICT;

-- Human clicks on tracked links per hour, by the link's workflow and media.
CREATE TABLE stats_clicks (
    account_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    workflow        TEXT NOT NULL,
    media           TEXT NOT NULL,
    clicks          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id, workflow, media)
) STRICT;

-- ---------------------------------------------------------------------------------------
-- Backfill (before the triggers exist). Same definitions as the triggers.

-- Read receipts: per conversation, the newest message one of them named.
INSERT INTO stats_reads(account_id, contact_id, upto)
SELECT m.account_id, m.contact_id, max(m.created_at)
FROM events e JOIN messages m ON m.mid = coalesce(
    json_extract(e.raw, '$.entry[0].messaging[0].read.mid'),
    json_extract(e.raw, '$.entry[0].standby[0].read.mid'),
    json_extract(e.raw, '$.entry[0].changes[0].value.read.mid'))
WHERE e.kind IN ('comment', 'live_comment', 'read') AND e.kind = 'read'
  AND e.processed_at IS NOT NULL AND json_valid(e.raw)
GROUP BY m.account_id, m.contact_id;

-- A trigger is the first stored send (lowest rowid) of a decision: its key without the
-- trailing action number, among sends of a workflow (not a resumed flow, not a chunk '#n').
INSERT INTO stats_sends(account_id, hour, workflow, sent_by, media, triggers, sent, read,
                        refused, pending)
SELECT s.account_id, CAST(s.created_at / 3600 AS INTEGER), coalesce(s.workflow, ''), s.sent_by,
    coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                      json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
              FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                WHEN instr(s.key, 'comment:') > 0 THEN 'comment:' || substr(substr(s.key,
                instr(s.key, 'comment:') + 8), 1, instr(substr(s.key, instr(s.key, 'comment:')
                + 8) || ':', ':') - 1) END), ''),
    sum(s.rowid IN (SELECT min(rowid) FROM sends WHERE workflow IS NOT NULL
                    AND key NOT LIKE 'send:resume:%' AND instr(key, '#') = 0
                    GROUP BY rtrim(key, '0123456789'))),
    sum(s.state = 'sent' AND s.kind IN ('text', 'media', 'template', 'private_reply',
                                        'public_reply')),
    -- (a message is never older than its send: the mark filters before the lookup)
    sum(s.state = 'sent' AND r.upto >= s.created_at AND EXISTS (SELECT 1 FROM messages m
        WHERE m.mid = s.message_id AND m.account_id = s.account_id
          AND m.contact_id = s.contact_id AND m.created_at <= r.upto)),
    sum(s.state IN ('refused', 'failed')),
    sum(s.state IN ('pending', 'in_flight'))
FROM sends s LEFT JOIN stats_reads r
    ON r.account_id = s.account_id AND r.contact_id = s.contact_id
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO stats_refusals(account_id, hour, reason, n)
SELECT account_id, CAST(created_at / 3600 AS INTEGER), coalesce(reason, 'unknown'), count(*)
FROM sends WHERE state IN ('refused', 'failed')
GROUP BY 1, 2, 3;

INSERT INTO stats_messages(account_id, hour, n_in, n_out)
SELECT account_id, CAST(created_at / 3600 AS INTEGER), sum(direction = 'in'),
       sum(direction = 'out')
FROM messages INDEXED BY messages_time
GROUP BY 1, 2;

-- Waits: g numbers each message by the count of our messages up to it (in the
-- conversation, by time); a run of the person's messages with the same g waits from its
-- first one, and our message number g + 1 answers it.
CREATE TEMP TABLE stats_tmp_runs AS
WITH o AS (
    SELECT account_id, contact_id, direction, created_at,
        sum(direction = 'out') OVER (PARTITION BY account_id, contact_id
            ORDER BY created_at, id ROWS UNBOUNDED PRECEDING) AS g
    FROM messages
)
SELECT account_id, contact_id, g, min(created_at) FILTER (WHERE direction = 'in') AS t_in,
       min(created_at) FILTER (WHERE direction = 'out') AS t_out
FROM o GROUP BY account_id, contact_id, g;
CREATE INDEX temp.stats_tmp_runs_g ON stats_tmp_runs(account_id, contact_id, g);

CREATE TEMP TABLE stats_tmp_waits AS
SELECT i.account_id, i.t_in, d - d % CASE
        WHEN d < 200 THEN 1 WHEN d < 500 THEN 5 WHEN d < 1000 THEN 10 WHEN d < 2000 THEN 20
        WHEN d < 5000 THEN 50 WHEN d < 10000 THEN 100 WHEN d < 20000 THEN 200
        WHEN d < 50000 THEN 500 WHEN d < 100000 THEN 1000 WHEN d < 200000 THEN 2000
        WHEN d < 500000 THEN 5000 WHEN d < 1000000 THEN 10000 WHEN d < 2000000 THEN 20000
        WHEN d < 5000000 THEN 50000 WHEN d < 10000000 THEN 100000
        WHEN d < 20000000 THEN 200000 WHEN d < 50000000 THEN 500000 ELSE 1000000 END AS bucket
FROM (SELECT i.account_id, i.t_in,
             CAST(round((a.t_out - i.t_in) * 10) AS INTEGER) AS d
      FROM stats_tmp_runs i JOIN stats_tmp_runs a ON a.account_id = i.account_id
        AND a.contact_id = i.contact_id AND a.g = i.g + 1
      WHERE i.t_in IS NOT NULL) i;

INSERT INTO stats_waits_hour(account_id, hour, bucket, n)
SELECT account_id, CAST(t_in / 3600 AS INTEGER), bucket, count(*) FROM stats_tmp_waits
GROUP BY 1, 2, 3;
INSERT INTO stats_waits_day(account_id, day, bucket, n)
SELECT account_id, CAST(t_in / 86400 AS INTEGER), bucket, count(*) FROM stats_tmp_waits
GROUP BY 1, 2, 3;

-- Still waiting: a run of the person's messages after our last one.
INSERT INTO stats_pending(account_id, contact_id, since_at)
SELECT r.account_id, r.contact_id, r.t_in FROM stats_tmp_runs r
WHERE r.t_in IS NOT NULL AND NOT EXISTS (SELECT 1 FROM stats_tmp_runs a
    WHERE a.account_id = r.account_id AND a.contact_id = r.contact_id AND a.g > r.g);

DROP TABLE stats_tmp_waits;
DROP TABLE stats_tmp_runs;

CREATE TEMP TABLE stats_tmp_levels AS
SELECT account_id, contact_id, updated_at, state,
    CASE coalesce(json_extract(state, '$.stage'), 'new') WHEN 'booked' THEN 3
    WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1 FROM
    json_each(state, '$.tags') WHERE value = 'lead') ELSE 1 END AS level
FROM conversations;

INSERT INTO stats_conversations(account_id, hour, contacts, leads, qualified, booked)
SELECT account_id, CAST(updated_at / 3600 AS INTEGER), count(*), sum(level >= 1),
       sum(level >= 2), sum(level >= 3)
FROM stats_tmp_levels GROUP BY 1, 2;

INSERT INTO stats_fired(account_id, hour, workflow, contacts, leads, qualified, booked)
SELECT c.account_id, CAST(f.value / 3600 AS INTEGER), f.key, count(*), sum(c.level >= 1),
       sum(c.level >= 2), sum(c.level >= 3)
FROM stats_tmp_levels c, json_each(c.state, '$.fired') f
WHERE f.type IN ('integer', 'real')
GROUP BY 1, 2, 3;

INSERT INTO stats_commenters(account_id, contact_id, media, last_at)
SELECT account_id, contact_id, media, max(received_at) FROM (
    SELECT e.account_id, e.contact_id, e.received_at, CAST(coalesce(
        json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
        json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT) AS media
    FROM events e
    WHERE e.kind IN ('comment', 'live_comment', 'read') AND e.kind != 'read'
      AND e.processed_at IS NOT NULL AND json_valid(e.raw))
WHERE media IS NOT NULL AND contact_id IS NOT NULL
GROUP BY 1, 2, 3;

INSERT INTO stats_media(account_id, hour, media, comments)
SELECT account_id, CAST(received_at / 3600 AS INTEGER), media, count(*) FROM (
    SELECT e.account_id, e.received_at, CAST(coalesce(
        json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
        json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT) AS media
    FROM events e
    WHERE e.kind IN ('comment', 'live_comment', 'read') AND e.kind != 'read'
      AND e.processed_at IS NOT NULL AND json_valid(e.raw))
WHERE media IS NOT NULL
GROUP BY 1, 2, 3;

INSERT INTO stats_media(account_id, hour, media, leads, qualified, booked)
SELECT k.account_id, CAST(k.last_at / 3600 AS INTEGER), k.media, sum(c.level >= 1),
       sum(c.level >= 2), sum(c.level >= 3)
FROM stats_commenters k JOIN stats_tmp_levels c
  ON c.account_id = k.account_id AND c.contact_id = k.contact_id
WHERE c.level > 0
GROUP BY 1, 2, 3
ON CONFLICT DO UPDATE SET leads = leads + excluded.leads,
    qualified = qualified + excluded.qualified, booked = booked + excluded.booked;

DROP TABLE stats_tmp_levels;

INSERT INTO stats_clicks(account_id, hour, workflow, media, clicks)
SELECT c.account_id, CAST(c.at / 3600 AS INTEGER), coalesce(l.workflow, ''),
    coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                      json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
              FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                WHEN instr(l.send_key, 'comment:') > 0 THEN 'comment:' || substr(substr(
                l.send_key, instr(l.send_key, 'comment:') + 8), 1, instr(substr(l.send_key,
                instr(l.send_key, 'comment:') + 8) || ':', ':') - 1) END), ''),
    count(*)
FROM clicks c JOIN links l ON l.code = c.code
GROUP BY 1, 2, 3, 4;

-- ---------------------------------------------------------------------------------------
-- Triggers.

-- sends ------------------------------------------------------------------------------------
-- The media of a send: its key names the comment ('comment:{id}'), whose stored event names
-- the media. Looked up by the unique dedupe_key (one index probe), only for such keys.
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
                    instr(NEW.key, 'comment:') + 8) || ':', ':') - 1) END), ''),
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

-- A state change moves the send between counters (same bucket: key, time and workflow of a
-- send never change).
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
                    instr(NEW.key, 'comment:') + 8) || ':', ':') - 1) END), ''),
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

CREATE TRIGGER stats_sends_refusal AFTER UPDATE OF state, reason ON sends
WHEN (OLD.state IN ('refused', 'failed') OR NEW.state IN ('refused', 'failed'))
 AND (OLD.state IS NOT NEW.state OR OLD.reason IS NOT NEW.reason) BEGIN
    INSERT INTO stats_refusals(account_id, hour, reason, n)
    SELECT OLD.account_id, CAST(OLD.created_at / 3600 AS INTEGER),
           coalesce(OLD.reason, 'unknown'), -1
    WHERE OLD.state IN ('refused', 'failed')
    ON CONFLICT DO UPDATE SET n = n - 1;
    INSERT INTO stats_refusals(account_id, hour, reason, n)
    SELECT NEW.account_id, CAST(NEW.created_at / 3600 AS INTEGER),
           coalesce(NEW.reason, 'unknown'), 1
    WHERE NEW.state IN ('refused', 'failed')
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

-- messages ---------------------------------------------------------------------------------
CREATE TRIGGER stats_messages_in AFTER INSERT ON messages WHEN NEW.direction = 'in' BEGIN
    INSERT INTO stats_messages(account_id, hour, n_in) VALUES (NEW.account_id,
        CAST(NEW.created_at / 3600 AS INTEGER), 1)
    ON CONFLICT DO UPDATE SET n_in = n_in + 1;
    INSERT INTO stats_pending(account_id, contact_id, since_at)
    VALUES (NEW.account_id, NEW.contact_id, NEW.created_at)
    ON CONFLICT DO NOTHING;
END;

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
                    instr(s.key, 'comment:') + 8) || ':', ':') - 1) END), ''),
        1
    FROM sends s JOIN stats_reads r ON r.account_id = NEW.account_id
        AND r.contact_id = NEW.contact_id
    WHERE NEW.mid IS NOT NULL AND s.message_id = NEW.mid AND s.state = 'sent'
      AND s.account_id = NEW.account_id AND s.contact_id = NEW.contact_id
      AND NEW.created_at <= r.upto
    ON CONFLICT DO UPDATE SET read = read + 1;
END;

-- events: read receipts and comments ------------------------------------------------------
-- Applied when the worker marks the event processed (once: processed_at is never reset),
-- not when the webhook stores it: ingest stays free of this work (and its row counts
-- exact), and by then the message a receipt names is normally stored.
-- A receipt moves its conversation's mark up to the message it names: our sent messages in
-- between (messages_thread range, then sends_message) become read. Receipts for unknown
-- messages change nothing.
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
                    instr(s.key, 'comment:') + 8) || ':', ':') - 1) END), ''),
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

-- A comment on a media: counted in its hour; its author moves from the hour of their
-- previous last comment on the media to this one's, with their conversation's current
-- level (0 without a conversation yet).
CREATE TRIGGER stats_events_comment AFTER UPDATE OF processed_at ON events
WHEN NEW.kind IN ('comment', 'live_comment') AND OLD.processed_at IS NULL
 AND NEW.processed_at IS NOT NULL AND json_valid(NEW.raw) BEGIN
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

-- conversations ----------------------------------------------------------------------------
CREATE TRIGGER stats_conversations_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO stats_conversations(account_id, hour, contacts, leads, qualified, booked)
    SELECT NEW.account_id, CAST(NEW.updated_at / 3600 AS INTEGER), 1, lv >= 1, lv >= 2, lv >= 3
    FROM (SELECT CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv)
    WHERE true
    ON CONFLICT DO UPDATE SET contacts = contacts + 1, leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
    INSERT INTO stats_fired(account_id, hour, workflow, contacts, leads, qualified, booked)
    SELECT NEW.account_id, CAST(f.value / 3600 AS INTEGER), f.key, 1, lv >= 1, lv >= 2, lv >= 3
    FROM json_each(NEW.state, '$.fired') f,
         (SELECT CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv)
    WHERE f.type IN ('integer', 'real')
    ON CONFLICT DO UPDATE SET contacts = contacts + 1, leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
    INSERT INTO stats_media(account_id, hour, media, leads, qualified, booked)
    SELECT NEW.account_id, CAST(k.last_at / 3600 AS INTEGER), k.media, lv >= 1, lv >= 2, lv >= 3
    FROM stats_commenters k,
         (SELECT CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv)
    WHERE k.account_id = NEW.account_id AND k.contact_id = NEW.contact_id AND lv > 0
    ON CONFLICT DO UPDATE SET leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
END;

-- Active conversations: moved when updated_at enters another hour or the level changes
-- (most updates do neither: the WHEN keeps them at two JSON lookups).
CREATE TRIGGER stats_conversations_active AFTER UPDATE OF state, updated_at ON conversations
WHEN CAST(OLD.updated_at / 3600 AS INTEGER) != CAST(NEW.updated_at / 3600 AS INTEGER)
  OR (OLD.state IS NOT NEW.state
      AND CASE coalesce(json_extract(OLD.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(OLD.state, '$.tags') WHERE value = 'lead') ELSE 1 END
      != CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END) BEGIN
    INSERT INTO stats_conversations(account_id, hour, contacts, leads, qualified, booked)
    SELECT OLD.account_id, CAST(OLD.updated_at / 3600 AS INTEGER), -1, -(lv >= 1), -(lv >= 2),
           -(lv >= 3)
    FROM (SELECT CASE coalesce(json_extract(OLD.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(OLD.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv)
    WHERE true
    ON CONFLICT DO UPDATE SET contacts = contacts - 1, leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
    INSERT INTO stats_conversations(account_id, hour, contacts, leads, qualified, booked)
    SELECT NEW.account_id, CAST(NEW.updated_at / 3600 AS INTEGER), 1, lv >= 1, lv >= 2, lv >= 3
    FROM (SELECT CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv)
    WHERE true
    ON CONFLICT DO UPDATE SET contacts = contacts + 1, leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
END;

-- A workflow fired (or the level changed): every workflow of the contact leaves its old hour
-- with the old level and joins its new hour with the new one (a handful of entries).
CREATE TRIGGER stats_conversations_fired AFTER UPDATE OF state ON conversations
WHEN OLD.state IS NOT NEW.state
 AND (json_extract(OLD.state, '$.fired') IS NOT json_extract(NEW.state, '$.fired')
      OR CASE coalesce(json_extract(OLD.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(OLD.state, '$.tags') WHERE value = 'lead') ELSE 1 END
      != CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END) BEGIN
    INSERT INTO stats_fired(account_id, hour, workflow, contacts, leads, qualified, booked)
    SELECT OLD.account_id, CAST(f.value / 3600 AS INTEGER), f.key, -1, -(lv >= 1), -(lv >= 2),
           -(lv >= 3)
    FROM json_each(OLD.state, '$.fired') f,
         (SELECT CASE coalesce(json_extract(OLD.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(OLD.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv)
    WHERE f.type IN ('integer', 'real')
    ON CONFLICT DO UPDATE SET contacts = contacts - 1, leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
    INSERT INTO stats_fired(account_id, hour, workflow, contacts, leads, qualified, booked)
    SELECT NEW.account_id, CAST(f.value / 3600 AS INTEGER), f.key, 1, lv >= 1, lv >= 2, lv >= 3
    FROM json_each(NEW.state, '$.fired') f,
         (SELECT CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS lv)
    WHERE f.type IN ('integer', 'real')
    ON CONFLICT DO UPDATE SET contacts = contacts + 1, leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
END;

-- The level changed: the contact's comments on each media count with the new level.
CREATE TRIGGER stats_conversations_media AFTER UPDATE OF state ON conversations
WHEN OLD.state IS NOT NEW.state
 AND CASE coalesce(json_extract(OLD.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(OLD.state, '$.tags') WHERE value = 'lead') ELSE 1 END
     != CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END BEGIN
    INSERT INTO stats_media(account_id, hour, media, leads, qualified, booked)
    SELECT k.account_id, CAST(k.last_at / 3600 AS INTEGER), k.media, (n >= 1) - (o >= 1),
           (n >= 2) - (o >= 2), (n >= 3) - (o >= 3)
    FROM stats_commenters k,
         (SELECT CASE coalesce(json_extract(OLD.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(OLD.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS o,
                 CASE coalesce(json_extract(NEW.state, '$.stage'), 'new') WHEN 'booked' THEN 3
            WHEN 'customer' THEN 3 WHEN 'qualified' THEN 2 WHEN 'new' THEN EXISTS (SELECT 1
            FROM json_each(NEW.state, '$.tags') WHERE value = 'lead') ELSE 1 END AS n)
    WHERE k.account_id = NEW.account_id AND k.contact_id = NEW.contact_id
    ON CONFLICT DO UPDATE SET leads = leads + excluded.leads,
        qualified = qualified + excluded.qualified, booked = booked + excluded.booked;
END;

-- clicks -----------------------------------------------------------------------------------
CREATE TRIGGER stats_clicks_insert AFTER INSERT ON clicks BEGIN
    INSERT INTO stats_clicks(account_id, hour, workflow, media, clicks)
    SELECT NEW.account_id, CAST(NEW.at / 3600 AS INTEGER), coalesce(l.workflow, ''),
        coalesce((SELECT CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),
                          json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)
                  FROM events e WHERE json_valid(e.raw) AND e.dedupe_key = CASE
                    WHEN instr(l.send_key, 'comment:') > 0 THEN 'comment:' || substr(substr(
                    l.send_key, instr(l.send_key, 'comment:') + 8), 1, instr(substr(l.send_key,
                    instr(l.send_key, 'comment:') + 8) || ':', ':') - 1) END), ''),
        1
    FROM links l WHERE l.code = NEW.code
    ON CONFLICT DO UPDATE SET clicks = clicks + 1;
END;
