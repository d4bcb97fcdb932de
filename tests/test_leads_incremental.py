"""Incremental lead scoring (instaset.leads.score_after) gives exactly what scoring the whole
history (score_lead) gives, after every event of a generated contact's life; and the
pipeline stores that same score without reading the contact's history."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from instaset.ai.scoring import rescore_in
from instaset.config import Config
from instaset.leads import Fact, LeadInput, LeadScore, Msg, score_after, score_lead
from tests.sending_harness import open_harness

CFG = Config.model_validate({"leads": {"qualified_at": 40, "rules": [
    {"name": "asked_price", "points": 15, "keywords": ["price", "how much"]},
    {"name": "wants_a_call", "points": 20, "keywords": ["call", "booking"]},
    {"name": "budget_words", "points": 10, "regex": r"\$\d+"},
    {"name": "gave_email", "points": 15, "field": "email"},
    {"name": "is_pro", "points": 5, "field": "plan", "equals": "Pro"},
    {"name": "vip", "points": 30, "tag": "vip"},
    {"name": "budget", "points": 20, "ai_fact": "budget"},
    {"name": "not_interested", "points": -40, "keywords": ["not interested"]},
]}}).leads

WORDS = ["hello", "price", "how much", "call", "booking", "$90", "not interested", "Précio",
         "a@b.io", "Pro", "pro", "thanks", "CALL", "😊"]


@dataclass(frozen=True)
class Step:
    kind: str  # message | comment | field | tag | fact | points | stage
    text: str = ""
    dt: float = 1.0  # seconds after the previous step (negative: an out-of-order message)
    name: str = ""


steps = st.lists(st.one_of(
    st.builds(Step, kind=st.just("message"),
              text=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join),
              dt=st.sampled_from([1.0, 5.0, -3.0])),
    st.builds(Step, kind=st.just("comment")),
    st.builds(Step, kind=st.just("field"), name=st.sampled_from(["email", "plan"]),
              text=st.sampled_from(["a@b.io", "Pro", "Basic", "x@y.io"])),
    st.builds(Step, kind=st.just("tag"), name=st.sampled_from(["vip", "other"])),
    st.builds(Step, kind=st.just("fact"), name=st.sampled_from(["budget", "goal"]),
              text=st.sampled_from(["$90", "soon"])),
    st.builds(Step, kind=st.just("points"), name=st.sampled_from(["quiz", "webinar"])),
    st.builds(Step, kind=st.just("stage"), text=st.sampled_from(["new", "customer", "lost"])),
), min_size=1, max_size=25)


def ordered(messages: list[tuple[float, int, Msg]]) -> tuple[Msg, ...]:
    return tuple(m for _, _, m in sorted(messages, key=lambda x: (x[0], x[1])))


@settings(max_examples=150, deadline=None)
@given(steps)
def test_score_after_equals_scoring_the_whole_history(life: list[Step]) -> None:
    messages: list[tuple[float, int, Msg]] = []
    full = LeadInput()
    stored: LeadScore | None = None
    t = 1_000.0
    for n, step in enumerate(life):
        t += abs(step.dt)
        newest: Msg | None = None
        if step.kind == "message":
            at = t + step.dt if step.dt < 0 else t
            newest = Msg(step.text, at, f"m{n}")
            messages.append((at, n, newest))
        elif step.kind == "field":
            full = replace(full, fields={**full.fields, step.name: step.text})
        elif step.kind == "tag":
            full = replace(full, tags=full.tags | {step.name})
        elif step.kind == "fact":
            full = replace(full, facts=(*full.facts, Fact("ai", step.name, step.text, step.text,
                                                          None, t)))
        elif step.kind == "points":
            full = replace(full, facts=(*full.facts, Fact("workflow", step.name, None, None, 5,
                                                          t)))
        elif step.kind == "stage":
            full = replace(full, workflow_stage=step.text)
        full = replace(full, messages=ordered(messages))
        expected = score_lead(CFG, full)
        # A full rescore from the stored score changes nothing while the history is whole
        # (it keeps only reasons whose message left it: tests/test_leads_retention.py).
        assert stored is None or score_lead(CFG, full, stored) == expected
        if stored is None:
            stored = expected  # the first score of a contact reads its whole history
            continue
        inc = replace(full, messages=(newest,) if newest else (),
                      earlier_messages=len(messages) > (1 if newest else 0))
        got = score_after(CFG, stored.reasons, inc)
        stored = got if got is not None else score_lead(CFG, full)
        assert stored == expected, (step, stored, expected)


def test_score_after_gives_up_when_a_field_changes() -> None:
    first = score_lead(CFG, LeadInput(messages=(Msg("mail me at a@b.io", 1.0),),
                                      fields={"email": "a@b.io"}))
    changed = LeadInput(messages=(Msg("or x@y.io", 2.0),), fields={"email": "x@y.io"},
                        earlier_messages=True)
    assert score_after(CFG, first.reasons, changed) is None
    assert score_after(CFG, first.reasons, replace(changed, fields={"email": "a@b.io"})) \
        == score_lead(CFG, LeadInput(messages=(Msg("mail me at a@b.io", 1.0),
                                               Msg("or x@y.io", 2.0)),
                                     fields={"email": "a@b.io"}))


async def test_pipeline_stores_the_full_score_without_reading_the_history(
    tmp_path: Path,
) -> None:
    """DMs through the real daemon: the stored lead after each is what rescoring the whole
    history gives (the leads' own rules, with the default config's as well)."""
    async with open_harness(tmp_path) as h:
        for text in ["hi", "how much is coaching?", "price please", "can we book a call",
                     "not interested anymore", "ok fine, $90 works"]:
            await h.dm("1129842642640637", text)
            await h.settle()
            async with h.rt.db.tx() as conn:
                stored = await conn.execute_fetchall(
                    "SELECT score, stage, reasons FROM leads")
                full, _ = await rescore_in(conn, h.config.leads, h.account_id,
                                           "1129842642640637", time.time())
            ((score, stage, reasons),) = stored
            assert (score, stage) == (full.score, full.stage)
            assert reasons == json.dumps(
                [r.to_dict() for r in full.reasons], ensure_ascii=False)
        assert full.score != 0  # the texts above do hit the default rules

