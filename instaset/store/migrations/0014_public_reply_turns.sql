-- 0014: public reply variants in turn.

-- A workflow's public replies so far (decide() takes the next variant): counted per comment
-- that fires a public reply, through this index rather than the account's every send.
CREATE INDEX sends_public_replies ON sends(account_id, workflow) WHERE kind = 'public_reply';
