"""The echo of our own send before the Send API's answer (reference §3.1: Chatwoot delays
echo processing because the echo often wins that race), end to end: the sandbox delivers
each echo before it answers (``Sandbox.echo_first``), and the daemon still sends each
message once, records it as automation's, and pauses nothing — for a text, a template and
a private reply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.sending_harness import Harness, open_harness

IGSID = "1129842642640637"
COMMENTER = "2229842642640638"
MEDIA = "17900000000000001"

FLOWS: list[dict[str, Any]] = [
    {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}}, "actions": [
        {"reply": "Here it comes"},
        {"template": {"elements": [{"title": "The guide", "subtitle": "Free",
                                    "buttons": [{"title": "Get", "payload": "GET"}]}]}}]},
    {"name": "comment-to-dm", "trigger": {"comment": {"keywords": ["guide"], "media": "any"}},
     "actions": [{"private_reply": "Sent you the guide"}]},
]


async def echo_times(h: Harness) -> dict[str, float]:
    """When the daemon received each echo, by the echoed message id."""
    rows = await h.rt.db.fetchall("SELECT raw, received_at FROM events WHERE kind = 'echo'")
    out: dict[str, float] = {}
    for row in rows:
        item = json.loads(row["raw"])["entry"][0]["messaging"][0]
        out[item["message"]["mid"]] = row["received_at"]
    return out


async def test_echoes_before_the_answers_neither_resend_nor_pause(tmp_path: Path) -> None:
    async with open_harness(tmp_path, workflows=FLOWS) as h:
        h.sandbox.echo_first = 1.0
        await h.dm(IGSID, "the guide please")
        await h.sandbox.user_comments(COMMENTER, "guide!", MEDIA)
        await h.settle()

        # One request per message: the text, the template, the private reply.
        kinds = ["text" if "text" in r.json["message"] else "template"  # type: ignore[operator]
                 for r in h.graph_sends(IGSID)]
        assert kinds == ["text", "template"]
        private = [r for r in h.sandbox.sends() if "comment_id" in r.json["recipient"]]  # type: ignore[operator]
        assert len(private) == 1

        sends = await h.rt.db.fetchall(
            "SELECT kind, state, message_id, updated_at FROM sends ORDER BY created_at")
        assert [(r["kind"], r["state"]) for r in sends] == [
            ("text", "sent"), ("template", "sent"), ("private_reply", "sent")]
        # Each echo really came first: received before its send was marked sent.
        echoes = await echo_times(h)
        assert set(echoes) == {r["message_id"] for r in sends}
        assert all(echoes[r["message_id"]] <= r["updated_at"] for r in sends)

        # Taken as automation's own messages, once each; nobody's automation paused.
        for igsid, n in ((IGSID, 2), (COMMENTER, 1)):
            out = await h.messages(igsid, "out")
            assert [r["sent_by"] for r in out] == ["automation"] * n
            assert (await h.conversation(igsid))["paused_until"] is None
        assert h.sandbox.undelivered == []
