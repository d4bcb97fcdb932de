-- 0011: the terminal's lookups on a large database.

-- `inbox show` / `inbox reply` name a contact by IGSID or by username (case-insensitive), in
-- any account: contacts' primary key starts with the account, so both terms scanned every
-- contact (~30 ms per lookup on 100,000 contacts).
CREATE INDEX contacts_by_id ON contacts(id);
CREATE INDEX contacts_username_lower ON contacts(lower(username));

-- `inbox`'s "N with unread messages" counted by reading every conversation row.
CREATE INDEX conversations_unread ON conversations(account_id) WHERE unread > 0;
