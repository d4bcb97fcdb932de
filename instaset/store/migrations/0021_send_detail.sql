-- 0021: the words of a send's refusal, stored on the send.

-- Why a send was refused or failed, in words: Meta's error message and code ("(#10) This
-- message is sent outside of allowed window. (code 10/2534022) [HTTP 400]") or the sending
-- rules' reason. `reason` stays the short slug (window_closed, user_unavailable...) that
-- stats group by; this is what `inbox reply`, `inbox show` and `export` show beside it.
-- Scrubbed of tokens before it is written (instaset/outbox.py). NULL on a send that went
-- out, and on sends refused before this migration (their words were not kept).
ALTER TABLE sends ADD COLUMN detail TEXT;
