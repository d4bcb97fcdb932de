-- 0016: which sends went again after a try whose outcome was unknown.

-- 1: the answer to a try was lost and no echo came within the wait, so the send went again
-- (or was then refused): Meta may have delivered that try, and its echo may still come,
-- late. Such an echo is automation's message, not the creator typing in the app.
-- 2: that late echo came (a second one with the same text is not explained by it).
ALTER TABLE sends ADD COLUMN resent INTEGER NOT NULL DEFAULT 0;
