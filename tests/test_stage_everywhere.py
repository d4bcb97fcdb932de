"""One stage per contact in every listing (found in review: `leads` said engaged where
`inbox`, `inbox show` and `contacts` said new: they read the workflow's stage only)."""

from __future__ import annotations

from pathlib import Path

from instaset.contacts import contact_json
from instaset.inbox import ContactRef, conversations, thread
from instaset.store import ai as aistore
from instaset.store import contacts as contactstore
from tests.sending_harness import ACCT, open_harness

IGSID = "5260000000000077"


async def test_inbox_show_and_contacts_show_the_lead_stage(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        await h.dm(IGSID, "hello, tell me more about coaching")
        await h.settle()
        async with h.rt.db.read() as conn:
            lead = await aistore.get_lead(conn, ACCT, IGSID)
        assert lead is not None and lead["stage"] == "engaged"  # they wrote: engaged
        now = h.clock()
        (listed,) = [c for c in await conversations(h.rt.db, now)
                     if c["contact_id"] == IGSID]
        assert listed["stage"] == "engaged"
        shown = await thread(h.rt.db, ContactRef(ACCT, IGSID, None), now, mark_read=False)
        assert shown["contact"]["stage"] == "engaged"
        row = await contactstore.get_contact(h.rt.db, ACCT, IGSID)
        assert row is not None and contact_json(row)["stage"] == "engaged"


async def test_a_workflow_stage_qualifies_a_low_score_and_the_notice_says_so(
        tmp_path: Path) -> None:
    """A workflow's `stage: qualified` makes a lead qualified whatever its points: the notice
    says the workflow did it, instead of quoting a score under leads.qualified_at as if it
    qualified. (No profile is synced yet: the notice names the contact by id.)"""
    wf = {"name": "vip", "trigger": {"dm": {"keywords": ["coaching"]}},
          "actions": [{"stage": "qualified"}]}
    async with open_harness(tmp_path, workflows=[wf]) as h:
        await h.dm(IGSID, "hello, tell me more about coaching")
        await h.settle()
        async with h.rt.db.read() as conn:
            lead = await aistore.get_lead(conn, ACCT, IGSID)
        assert lead is not None and lead["stage"] == "qualified"
        at = h.rt.config.leads.qualified_at
        assert lead["score"] < at
        [note] = await h.rt.db.fetchall(
            "SELECT text FROM notifications WHERE kind = 'lead'")
        assert str(note["text"]).startswith(
            f"{IGSID} is a qualified lead (stage qualified, set by a workflow; score"
            f" {lead['score']}, under leads.qualified_at {at})")
