-- 0013: the creator's own replies, newest first (the AI's style examples).

-- Each AI reply looks for the creator's past replies most like the message: the query sorted
-- every message of the account (125-140 ms at 400,000 messages, growing with the history).
CREATE INDEX messages_human_replies ON messages(account_id, created_at) WHERE sent_by = 'human';
