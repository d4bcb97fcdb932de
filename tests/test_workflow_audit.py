"""Workflow behaviour a creator relies on, found by the session-11 audit of the docs against
the engine, end to end: a signed webhook in, the request the sandbox receives out."""

from __future__ import annotations

from pathlib import Path

from tests.sending_harness import open_harness

IGSID = "1129842642640637"


async def test_a_stage_condition_sees_the_lead_stage(tmp_path: Path) -> None:
    """`when: {stage: ...}` tested only the stage a workflow step had set ("new" for
    everyone else): a qualified lead matched `stage: [new]`."""
    flows = [
        {"name": "pricing", "trigger": {"dm": {"keywords": ["price"]}},
         "actions": [{"reply": "It is $90"}, {"score": {"points": 60, "reason": "asked"}}]},
        {"name": "status-hot", "priority": 10, "trigger": {"dm": {"keywords": ["status"]}},
         "when": {"stage": ["qualified", "booked"]}, "actions": [{"reply": "hot"}]},
        {"name": "status-new", "priority": 5, "trigger": {"dm": {"keywords": ["status"]}},
         "when": {"stage": ["new", "engaged"]}, "actions": [{"reply": "not yet"}]},
    ]
    async with open_harness(tmp_path, workflows=flows) as h:
        await h.dm(IGSID, "status")
        await h.settle()
        await h.dm(IGSID, "what is the price?")
        await h.settle()
        stage = await h.rt.db.fetchone("SELECT stage FROM leads WHERE contact_id = ?", (IGSID,))
        await h.dm(IGSID, "status")
        await h.settle()
        texts = [r.json["message"].get("text") for r in h.graph_sends(IGSID)]
    assert stage is not None and stage["stage"] == "qualified"
    assert texts == ["not yet", "It is $90", "hot"]


async def test_an_ig_me_link_reopens_the_window_for_a_referral_workflow(tmp_path: Path) -> None:
    """A contact who last wrote two days ago opens the creator's ig.me link: Meta resets
    the 24 h window (as it documents for m.me links), but instaset kept it closed, so a
    referral workflow could only reply to contacts who had written within the day."""
    flows = [{"name": "bio", "trigger": {"referral": {"ref": ["ig-bio"]}},
              "actions": [{"reply": "Welcome from the bio link!"}]}]
    async with open_harness(tmp_path, workflows=flows) as h:
        await h.dm(IGSID, "hi")
        await h.settle()
        h.clock.advance(2 * 86400)
        await h.sandbox.user_opens_link(IGSID, "ig-bio")
        await h.settle()
        texts = [r.json["message"].get("text") for r in h.graph_sends(IGSID)]
        refused = await h.rt.db.fetchall("SELECT reason FROM sends WHERE state = 'refused'")
    assert texts == ["Welcome from the bio link!"]
    assert refused == []
