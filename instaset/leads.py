"""Explainable lead scores. Pure: no I/O, no clock.

:func:`score_lead` adds up the configured :class:`~instaset.config.LeadRule` s that hold for a
contact (each at most once, on its earliest evidence) and the points of workflow ``score``
steps, and derives the stage. Every point comes with a :class:`Reason` naming the rule, what
matched, and the contact's own words behind it, so ``instaset leads explain`` can show why.
Rescored from the stored score, a message rule keeps the points of a message gone from the
history (retention, an unsend) without its words (:func:`carried`, :func:`unquoted`).

Stages: ``new`` (never wrote) -> ``engaged`` (wrote) -> ``qualified`` (score at least
``qualified_at``) -> ``booked`` (has a booking) -> ``customer``. A workflow may set any stage;
``customer`` and ``lost`` set by a workflow stick, other stages only raise the computed one.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from instaset.config import LeadRule, LeadsConfig
from instaset.engine.model import MatchMode, TriggerKeywords
from instaset.engine.state import LEAD_STAGES
from instaset.engine.triggers import fold, match_keywords

STAGES = LEAD_STAGES
_RANK = {"new": 0, "engaged": 1, "qualified": 2, "booked": 3, "customer": 4}


@dataclass(frozen=True, slots=True)
class Msg:
    """One of the contact's messages."""

    text: str
    at: float
    mid: str | None = None


@dataclass(frozen=True, slots=True)
class Fact:
    """A stored fact: ``ai`` (extracted, with the quoted evidence) or ``workflow`` (points of
    a ``score`` step, ``name`` is its reason)."""

    source: str
    name: str
    value: str | None = None
    evidence: str | None = None
    points: int | None = None
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class LeadInput:
    messages: tuple[Msg, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    facts: tuple[Fact, ...] = ()
    workflow_stage: str = "new"
    booked: bool = False
    # Incremental scoring passes only the newest message; this says whether the contact
    # has older ones (for the "engaged" stage).
    earlier_messages: bool = False


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str  # the rule's name, or "workflow" for a score step
    points: int
    matched: str  # what held: keyword "price", field email = ..., AI: budget = ...
    evidence: str | None  # the contact's words behind it
    at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "points": self.points, "matched": self.matched,
                "evidence": self.evidence, "at": self.at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reason:
        return cls(str(d["rule"]), int(d["points"]), str(d["matched"]), d.get("evidence"),
                   d.get("at"))


@dataclass(frozen=True, slots=True)
class LeadScore:
    score: int
    stage: str
    reasons: tuple[Reason, ...]

    @property
    def qualified(self) -> bool:
        """At or past the qualified stage (and not lost)."""
        return _RANK.get(self.stage, 0) >= _RANK["qualified"]


_HASHES: dict[int, tuple[LeadsConfig, str]] = {}


def rules_hash(cfg: LeadsConfig) -> str:
    """A short digest of the rules and threshold: a stored score under another hash is
    stale and gets rescored. Cached per config object (it is computed on every message)."""
    hit = _HASHES.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    raw = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
    _HASHES[id(cfg)] = (cfg, digest)
    return digest


@functools.lru_cache(maxsize=256)
def _word_spec(keywords: tuple[str, ...]) -> TriggerKeywords:
    """A rule's keywords as a trigger spec, built once: rules are checked on every message."""
    return TriggerKeywords(keywords=keywords, match=MatchMode.WORD)


def _first_message(rule: LeadRule, messages: tuple[Msg, ...]) -> tuple[str, Msg] | None:
    if rule.keywords:
        spec = _word_spec(tuple(rule.keywords))
        for msg in messages:
            kw = match_keywords(spec, msg.text)
            if kw:
                return f"keyword {kw!r}", msg
    if rule.regex:
        rx = re.compile(rule.regex, re.IGNORECASE)
        for msg in messages:
            m = rx.search(msg.text)
            if m:
                return f"pattern {rule.regex!r} ({m.group(0)!r})", msg
    return None


def _quote_of(value: str, messages: tuple[Msg, ...]) -> Msg | None:
    """The earliest message that contains ``value`` (where a captured field came from)."""
    needle = fold(value)
    return next((m for m in messages if needle and needle in fold(m.text)), None)


def _message_reason(rule: LeadRule, messages: tuple[Msg, ...]) -> Reason | None:
    """The rule's reason from the earliest of ``messages`` its keywords or regex match."""
    found = _first_message(rule, messages)
    if found is None:
        return None
    matched, msg = found
    return Reason(rule.name, rule.points, matched, msg.text, msg.at)


def _check(rule: LeadRule, inp: LeadInput) -> Reason | None:
    reason = _message_reason(rule, inp.messages)
    if reason is not None:
        return reason
    if rule.field:
        value = inp.fields.get(rule.field)
        if not value or (rule.equals is not None and fold(value) != fold(rule.equals)):
            return None
        quote = _quote_of(value, inp.messages)
        return Reason(rule.name, rule.points, f"field {rule.field} = {value!r}",
                      quote.text if quote else None, quote.at if quote else None)
    if rule.tag:
        if rule.tag not in inp.tags:
            return None
        return Reason(rule.name, rule.points, f"tag {rule.tag!r}", None, None)
    if rule.ai_fact:
        facts = [f for f in inp.facts if f.source == "ai" and f.name == fold(rule.ai_fact)]
        if not facts:
            return None
        # The latest thing they said about it that they did not take back (an unsend
        # leaves the fact without its value: it still holds, saying nothing of theirs).
        fact = next((f for f in reversed(facts) if f.value is not None), facts[-1])
        said = f" = {fact.value!r}" if fact.value is not None else ""
        return Reason(rule.name, rule.points, f"AI: {fact.name}{said}", fact.evidence, fact.at)
    return None


def stage_for(score: int, cfg: LeadsConfig, inp: LeadInput) -> str:
    if inp.workflow_stage in ("customer", "lost"):
        return inp.workflow_stage
    if inp.booked:
        computed = "booked"
    elif score >= cfg.qualified_at:
        computed = "qualified"
    elif inp.messages or inp.earlier_messages:
        computed = "engaged"
    else:
        computed = "new"
    wf = inp.workflow_stage
    return wf if _RANK.get(wf, -1) > _RANK[computed] else computed


def qualified_by_evidence(score: int, cfg: LeadsConfig, inp: LeadInput) -> bool:
    """Whether the contact's own evidence (``score`` against ``qualified_at``, a booking)
    puts them at or past "qualified", whatever stage a workflow or the creator set for them:
    what tells a stage reached by scoring from one set by hand (only the first is news)."""
    return _RANK[stage_for(score, cfg, replace(inp, workflow_stage="new"))] >= _RANK["qualified"]


def score_lead(cfg: LeadsConfig, inp: LeadInput, prior: LeadScore | None = None) -> LeadScore:
    """The score, stage and reasons of one contact. Deterministic; reasons in rule order,
    then workflow points in the order they were given.

    ``prior`` is the stored score, when rescoring: its message rules' reasons whose message
    is no longer in ``inp.messages`` (aged out at the retention horizon, or unsent) stay,
    without the quote (see :func:`carried`), so points README says stay until a purge of the
    contact are not lost by rescoring what is left of the history. A contact whose stored
    stage says they wrote ("engaged"), or who keeps such a reason, stays engaged."""
    kept = carried(cfg, inp, prior.reasons) if prior is not None else {}
    reasons: list[Reason] = []
    for rule in cfg.rules:
        reason = _check(rule, inp)
        old = kept.get(rule.name)
        if old is not None and (reason is None or (
                old.at is not None and reason.at is not None and old.at < reason.at)):
            reason = old  # on its earliest evidence, as score_after keeps it
        if reason is not None:
            reasons.append(reason)
    if kept or (prior is not None and prior.stage == "engaged"):
        inp = replace(inp, earlier_messages=True)
    return _total(cfg, inp, reasons)


def carried(cfg: LeadsConfig, inp: LeadInput, prior: tuple[Reason, ...]) -> dict[str, Reason]:
    """The ``prior`` reasons of message rules (``keyword ...``, ``pattern ...``) that a
    rescore keeps although their message is gone from ``inp.messages``, by rule name, with
    the rule's current points and without their quote (:func:`unquoted`).

    A reason's message is gone when no message of ``inp`` has its time (a reason without a
    time: its words), so a message still there is scored as it reads now (an edit that took
    the keyword out takes the points too). The reason stays only while a rule of that name
    still holds for the old message, which can be told without its text: a keyword rule that
    still has the keyword that matched (word matching depends on nothing else), a pattern
    rule with the same regex. A rule renamed, removed, or whose keyword or regex changed
    loses the points, for good: whether it matches the old words cannot be told once they
    are gone, and a rule does not give points for words it never saw. (The rules' hash
    changing is not the test: adding one rule must not cost every other rule its points.)"""
    rules = {rule.name: rule for rule in cfg.rules}
    times = {m.at for m in inp.messages}
    texts = {m.text for m in inp.messages}
    out: dict[str, Reason] = {}
    for old in prior:
        rule = rules.get(old.rule)
        if rule is None or old.rule == "workflow" or not old.matched.startswith(_MESSAGE_MATCH):
            continue
        if (old.at in times) if old.at is not None else (old.evidence in texts):
            continue  # its message is still there
        if _holds(rule, old.matched):
            out[rule.name] = replace(unquoted(old), points=rule.points)
    return out


def _holds(rule: LeadRule, matched: str) -> bool:
    """Whether ``rule`` matches the message a reason described as ``matched``."""
    if rule.keywords and matched.startswith("keyword "):
        try:
            keyword = ast.literal_eval(matched[len("keyword "):])
        except (ValueError, SyntaxError, TypeError):
            return False
        return isinstance(keyword, str) and any(fold(k) == fold(keyword) for k in rule.keywords)
    if rule.regex and matched.startswith("pattern "):
        return _rule_part(matched) == f"pattern {rule.regex!r}"
    return False


def _total(cfg: LeadsConfig, inp: LeadInput, reasons: list[Reason]) -> LeadScore:
    """The rules' ``reasons`` plus the workflow points, summed and staged."""
    for fact in inp.facts:
        if fact.source == "workflow" and fact.points:
            reasons.append(Reason("workflow", fact.points, fact.name, fact.evidence, fact.at))
    score = sum(r.points for r in reasons)
    return LeadScore(score, stage_for(score, cfg, inp), tuple(reasons))


_MESSAGE_MATCH = ("keyword ", "pattern ")


def score_after(
    cfg: LeadsConfig, prior: tuple[Reason, ...], inp: LeadInput
) -> LeadScore | None:
    """The score :func:`score_lead` would give, computed from the ``prior`` reasons (scored
    under the same rules, before the newest message) and ``inp``, whose ``messages`` holds
    only the newest message (or nothing, for an event that adds none) and whose
    ``earlier_messages`` says whether older ones exist. O(1) in the contact's history:
    a message rule that held still holds with the same earliest message (unless the new
    one is earlier), one that did not can only be matched by the new message. None when it
    cannot be decided without the history (a field rule whose value changed: its quote is
    the earliest message containing the new value); score the whole history then."""
    before = {r.rule: r for r in prior if r.rule != "workflow"}
    reasons: list[Reason] = []
    for rule in cfg.rules:
        if rule.keywords or rule.regex:
            old = before.get(rule.name)
            new = _message_reason(rule, inp.messages)  # the newest message only
            if old is not None and old.matched.startswith(_MESSAGE_MATCH):
                if new is not None and old.at is not None and new.at is not None and (
                        new.at < old.at):
                    reasons.append(new)
                else:
                    reasons.append(old)
            elif new is not None:
                reasons.append(new)
            continue
        if rule.field:
            value = inp.fields.get(rule.field)
            if not value or (rule.equals is not None and fold(value) != fold(rule.equals)):
                continue
            old = before.get(rule.name)
            if old is None or old.matched != f"field {rule.field} = {value!r}":
                return None
            quote = _quote_of(value, inp.messages)
            if quote is not None and (old.evidence is None or (
                    old.at is not None and quote.at < old.at)):
                old = replace(old, evidence=quote.text, at=quote.at)
            reasons.append(old)
            continue
        # Neither a message nor a field rule: what it reads (tags, facts) is all in inp.
        reason = _check(rule, inp)
        if reason is not None:
            reasons.append(reason)
    return _total(cfg, inp, reasons)


def unquoted(reason: Reason) -> Reason:
    """``reason`` without the contact's words: no evidence, and for a pattern rule no
    ``('words')`` the regex found in them either (``pattern 'RX'`` stays: the creator's
    rule). The rule, points and time stay, so the score still explains itself."""
    return replace(reason, evidence=None, matched=_rule_part(reason.matched))


def _rule_part(matched: str) -> str:
    """``pattern 'RX' ('words')`` -> ``pattern 'RX'``; any other description as it is.
    The regex's literal ends at the first `` (`` before which the text is one whole string
    literal (a `` (`` inside it leaves an unterminated one)."""
    if not matched.startswith("pattern ") or not matched.endswith(")"):
        return matched
    body = matched[len("pattern "):]
    cut = body.find(" (")
    while cut != -1:
        try:
            literal = ast.literal_eval(body[:cut])
        except (ValueError, SyntaxError, TypeError):
            literal = None
        if isinstance(literal, str):
            return f"pattern {body[:cut]}"
        cut = body.find(" (", cut + 1)
    return matched


def explain(score: LeadScore) -> list[str]:
    """Human-readable lines: one per reason, with the message behind it."""
    lines = [f"score {score.score}, stage {score.stage}"]
    for r in score.reasons:
        line = f"{r.points:+d}  {r.rule}: {r.matched}"
        if r.evidence:
            line += f'  ← "{r.evidence}"'
        lines.append(line)
    return lines
