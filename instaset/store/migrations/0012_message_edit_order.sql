-- 0012: edits applied in Meta's order, not in the order they are processed.

-- The highest `num_edit` applied to the message (0: none, or edits that carry no number).
-- A late redelivery of an older edit must not overwrite the newer text.
ALTER TABLE messages ADD COLUMN edit_num INTEGER NOT NULL DEFAULT 0;
