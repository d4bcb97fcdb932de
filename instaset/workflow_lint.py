"""Lints for ``instaset workflows validate``: things that load fine but will not do what the
creator expects. Warnings only; the schema (``instaset.engine.model``) already rejects what
cannot work at all (13+ quick replies, 20+ character titles, unknown keys...).

Contract: :func:`lint_workflows` is pure and deterministic (warnings in file order: by
workflow, then by position inside it); :func:`lint_config` adds ``file:line:column`` by
reading the YAML the config came from. Every warning has a stable ``code``:

- ``text-too-long``: a text over Instagram's limit after templating (DMs and private
  replies: 1000 bytes; public replies: 2200 characters; button texts: 640; card titles and
  subtitles: 80), with placeholders at their longest expected size
  (:data:`instaset.step_texts.ASSUMED_SIZES`).
- ``quick-replies-on-comment`` / ``comment-reply-not-text``: on a comment, a workflow's first
  message is the comment's private reply, which is text only: quick replies are dropped and
  media, buttons, templates and booking offers are refused.
- ``shadowed``: a workflow that never fires because one that runs first (higher priority,
  or same priority and earlier in the file) has the same trigger and no conditions.
- ``duplicate-keyword``: the same keyword in two workflows' triggers of the same kind.
- ``keyword-never-matches``, ``keyword-punctuation``, ``regex-matches-everything``,
  ``regex-accents``, ``no-media``: keywords that, after case and accent folding, never (or
  always, or only sometimes) match.
- ``unknown-link`` / ``malformed-link``: ``{link:NAME}`` tokens naming no defined link, or
  written so that they would be sent literally. (Nothing defines named links yet: plain
  URLs are tracked automatically by :mod:`instaset.links`, so every token is flagged.)
- ``unknown-field``: a template or condition naming a contact field that no workflow sets
  (``set:`` or ``ask:``) and that has no fallback (``{plan|basic}``): it renders empty.
- ``unreachable-step``: steps after a ``handoff`` (which ends the workflow), or a ``delay``
  with nothing after it.
- ``unknown-stage``: a ``stage:`` step naming none of the lead stages but close to one (a
  typo invents a stage lead scoring does not rank), or a ``when: stage`` naming a stage
  nothing sets (the condition holds only for contacts given it with `instaset contacts set`).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from instaset.config import Config
from instaset.config_models import IceBreaker, MenuItem
from instaset.config_yaml import locate
from instaset.engine.model import (
    ActionStep,
    CommentTrigger,
    Conditions,
    MatchMode,
    TriggerKeywords,
    Workflow,
)
from instaset.engine.templating import BUILTIN_PLACEHOLDERS, LINK_TOKEN_RE
from instaset.engine.triggers import fold
from instaset.leads import STAGES as LEAD_STAGES
from instaset.step_texts import length_problem, step_texts

__all__ = [
    "LintWarning",
    "lint_config",
    "lint_workflows",
]

Path_ = tuple[str | int, ...]

_PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*)(\|[^{}]*)?\}")
_LINKISH_RE = re.compile(r"\{\s*link\s*:([^{}]*)\}")
#: Fields filled outside workflows (the user profile lookup).
_PROFILE_FIELDS = frozenset({"name"})
_MESSAGE_KINDS = ("reply", "private_reply", "ask", "media", "buttons", "template",
                  "offer_booking", "ai_reply")


@dataclass(frozen=True, slots=True)
class LintWarning:
    """One warning. ``path`` is the YAML location (``("workflows", 2, "actions", 0,
    "reply")``, keys spelled as in YAML); ``line``/``column`` (1-based) and ``file`` are filled
    by :func:`lint_config`."""

    code: str
    workflow: str
    where: str
    message: str
    path: Path_
    line: int | None = None
    file: str | None = None
    column: int | None = None

    def format(self) -> str:
        """``config.yaml:57:9: warning: free-guide: step 1 (reply): ... [text-too-long]``."""
        loc = self.file or "config"
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        where = f"{self.where}: " if self.where else ""
        return f"{loc}: warning: {self.workflow}: {where}{self.message} [{self.code}]"

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "workflow": self.workflow, "where": self.where,
                "message": self.message, "file": self.file, "line": self.line,
                "column": self.column}


# --- the lints ----------------------------------------------------------------------------


def _step_where(i: int, step: ActionStep) -> str:
    return f"step {i + 1} ({step.kind})"


_NO_CONDITIONS = Conditions()


def _order(workflows: Sequence[Workflow]) -> list[tuple[int, Workflow]]:
    """Enabled workflows in the order ``decide`` tries them."""
    ranked = sorted(enumerate(workflows), key=lambda p: (-p[1].priority, p[0]))
    return [(i, wf) for i, wf in ranked if wf.enabled]


def _runs_first(wa: Workflow, wb: Workflow) -> str:
    if wa.priority != wb.priority:
        return f"priority {wa.priority} over {wb.priority}"
    return "same priority, earlier in the file"


def _shadowed(workflows: Sequence[Workflow]) -> Iterator[LintWarning]:
    """A workflow whose every trigger kind an earlier, unconditioned one has, identical.
    Indexed by (kind, trigger part) so that thousands of workflows stay linear."""
    order = _order(workflows)
    seen: dict[tuple[str, str], list[int]] = {}  # (kind, that part of a trigger) -> positions
    for pos, (ib, b) in enumerate(order):
        kinds = b.trigger.kinds()
        parts = [(k, _part(getattr(b.trigger, k))) for k in kinds]
        common: set[int] | None = None
        for key in parts:
            found = set(seen.get(key, ()))
            common = found if common is None else common & found
            if not common:
                break
        if kinds and common:
            a = order[min(common)][1]
            yield LintWarning(
                "shadowed", b.name, "trigger",
                f"never fires: {a.name} has the same trigger ({', '.join(kinds)}), no "
                f"conditions, and runs first ({_runs_first(a, b)})",
                ("workflows", ib, "trigger"))
        if b.when == _NO_CONDITIONS:
            for key in parts:
                seen.setdefault(key, []).append(pos)


def _part(value: object) -> str:
    """A trigger part as a comparable key (equal parts, equal keys)."""
    return value.model_dump_json() if hasattr(value, "model_dump_json") else repr(value)


def _keyword_specs(wf: Workflow) -> Iterator[tuple[str, TriggerKeywords]]:
    for kind in ("dm", "comment", "live_comment", "story_reply"):
        spec = getattr(wf.trigger, kind)
        if spec is not None:
            yield kind, spec


def _media_overlap(a: TriggerKeywords, b: TriggerKeywords) -> bool:
    if not isinstance(a, CommentTrigger) or not isinstance(b, CommentTrigger):
        return True
    if a.media == "any" or b.media == "any":
        return True
    return bool(set(a.media) & set(b.media))


# (first, second): a keyword matched the first way matches every text it matches the second.
_LOOSER = {(MatchMode.WORD, MatchMode.EXACT), (MatchMode.CONTAINS, MatchMode.EXACT),
           (MatchMode.CONTAINS, MatchMode.WORD), (MatchMode.ANY_WORD, MatchMode.EXACT),
           (MatchMode.ANY_WORD, MatchMode.WORD)}


def _covers(a: TriggerKeywords, b: TriggerKeywords) -> bool:
    """Whether ``a`` matches every message (or comment) ``b`` matches for a keyword both
    have: a mode at least as loose, and for comments every media and reply ``b`` takes."""
    if a.match != b.match and (a.match, b.match) not in _LOOSER:
        return False
    if isinstance(a, CommentTrigger) and isinstance(b, CommentTrigger):
        if b.replies and not a.replies:
            return False
        if a.media != "any" and (b.media == "any" or not set(b.media) <= set(a.media)):
            return False
    return True


def _worst_holder(holders: list[tuple[int, Workflow, TriggerKeywords]], b: Workflow,
                  spec: TriggerKeywords) -> tuple[int, Workflow, TriggerKeywords] | None:
    """Of the workflows above ``b`` holding a keyword, the one that hides it most: one with
    no conditions whose match covers ``b``'s (it never fires here), else one with no
    conditions, else the first (None: no other workflow, or no media in common)."""
    others = [h for h in holders if h[1].name != b.name and _media_overlap(h[2], spec)]
    free = [h for h in others if h[1].when == _NO_CONDITIONS]
    covering = [h for h in free if _covers(h[2], spec)]
    best = covering or free or others
    return best[0] if best else None


def _duplicates(workflows: Sequence[Workflow], shadowed: set[str]) -> Iterator[LintWarning]:
    seen: dict[tuple[str, str], list[tuple[int, Workflow, TriggerKeywords]]] = {}
    order = _order(workflows)
    for ib, b in order:
        if b.name in shadowed:
            continue  # already reported as a whole
        for kind, spec in _keyword_specs(b):
            for k, kw in enumerate(spec.keywords):
                norm = kw if spec.match is MatchMode.REGEX else fold(kw)
                first = _worst_holder(seen.get((kind, norm), []), b, spec)
                via = ""
                if first is None and kind == "story_reply":
                    # A dm trigger takes story replies too: one above takes this keyword's.
                    first = _worst_holder(seen.get(("dm", norm), []), b, spec)
                    via = " (its dm trigger takes story replies too)"
                holders = seen.setdefault((kind, norm), [])
                if not holders or holders[-1][1].name != b.name:
                    holders.append((ib, b, spec))
                if first is None:
                    continue
                _ia, a, a_spec = first
                if a.when != _NO_CONDITIONS:
                    effect = "here it only fires when their conditions fail"
                elif _covers(a_spec, spec):
                    effect = "it never fires here for this keyword"
                else:
                    effect = ("here it only fires on what that one's "
                              f"{a_spec.match.value} match (or media, replies) leaves out")
                yield LintWarning(
                    "duplicate-keyword", b.name, f"trigger {kind}",
                    f"keyword {kw!r} is also in {a.name}{via}, which runs first "
                    f"({_runs_first(a, b)}): {effect}",
                    ("workflows", ib, "trigger", kind, "keywords", k))


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "P"


def _codepoints(text: str) -> str:
    return " ".join(f"U+{ord(c):04X}" for c in text)


def _strip_punct(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_punct(text[start]):
        start += 1
    while end > start and _is_punct(text[end - 1]):
        end -= 1
    return text[start:end]


def _keyword_problems(wf: Workflow, i: int) -> Iterator[LintWarning]:
    for kind, spec in _keyword_specs(wf):
        base: Path_ = ("workflows", i, "trigger", kind)
        where = f"trigger {kind}"
        if isinstance(spec, CommentTrigger) and spec.media != "any" and not spec.media:
            yield LintWarning("no-media", wf.name, where,
                              "media: [] lists no post, so no comment ever matches "
                              "(use media: any, or list media ids)", (*base, "media"))
        for k, kw in enumerate(spec.keywords):
            path: Path_ = (*base, "keywords", k)
            if spec.match is MatchMode.REGEX:
                rx = re.compile(kw, re.IGNORECASE)
                if rx.search("") is not None:
                    yield LintWarning("regex-matches-everything", wf.name, where,
                                      f"regex {kw!r} matches an empty string, so it matches "
                                      "every message", path)
                elif any(unicodedata.combining(c) for c in unicodedata.normalize(
                        "NFKD", re.sub(r"\[[^\]]*\]", "", kw))):
                    # (Accents inside a character class such as [ií] are the fix itself.)
                    yield LintWarning("regex-accents", wf.name, where,
                                      f"regex {kw!r} has accents: a message typed without them "
                                      f"({fold(kw)!r}) does not match; use a character class "
                                      "such as [ií]", path)
                continue
            folded = fold(kw)
            if not folded:
                yield LintWarning("keyword-never-matches", wf.name, where,
                                  f"keyword {kw!r} ({_codepoints(kw)}) is empty once accents "
                                  "and variation selectors are removed, so it never matches", path)
            elif spec.match is MatchMode.EXACT and all(_is_punct(c) or c.isspace()
                                                       for c in folded):
                yield LintWarning("keyword-never-matches", wf.name, where,
                                  f"keyword {kw!r} is only punctuation, which exact matching "
                                  "ignores: it matches only messages that are punctuation",
                                  path)
            elif spec.match in (MatchMode.WORD, MatchMode.ANY_WORD) and (
                _is_punct(folded[0]) or _is_punct(folded[-1])
            ):
                bare = _strip_punct(folded)
                tail = (f"so {bare!r} alone does not match" if bare else
                        "and it is only punctuation: use match: contains to match it")
                yield LintWarning("keyword-punctuation", wf.name, where,
                                  f"keyword {kw!r} has punctuation at an edge: in "
                                  f"{spec.match.value} mode the message must contain it too, "
                                  f"{tail}", path)


def _first_message_step(wf: Workflow) -> tuple[int, ActionStep] | None:
    for i, step in enumerate(wf.actions):
        if step.kind in _MESSAGE_KINDS:
            if step.ai_reply is not None and step.ai_reply.mode != "auto":
                continue
            return i, step
    return None


def _comment_problems(wf: Workflow, i: int) -> Iterator[LintWarning]:
    if not wf.trigger.on_comments:
        return
    first = _first_message_step(wf)
    if first is None:
        return
    n, step = first
    path: Path_ = ("workflows", i, "actions", n)
    if step.reply is not None and step.reply.quick_replies:
        yield LintWarning("quick-replies-on-comment", wf.name, _step_where(n, step),
                          "on a comment this reply is the comment's private reply, which "
                          "cannot carry quick replies: they are dropped", (*path, "reply"))
    elif step.ask is not None and step.ask.choices:
        yield LintWarning("quick-replies-on-comment", wf.name, _step_where(n, step),
                          "on a comment this question is the comment's private reply, which "
                          "cannot carry the choices as quick replies", (*path, "ask"))
    elif step.kind in ("media", "buttons", "template", "offer_booking"):
        yield LintWarning("comment-reply-not-text", wf.name, _step_where(n, step),
                          f"on a comment the first message is the private reply, which can "
                          f"only be text: this {step.kind} is refused (start with a reply)",
                          (*path, step.kind))


def _unreachable(wf: Workflow, i: int) -> Iterator[LintWarning]:
    for n, step in enumerate(wf.actions):
        if step.handoff is not None and n + 1 < len(wf.actions):
            later = len(wf.actions) - n - 1
            yield LintWarning("unreachable-step", wf.name, _step_where(n + 1, wf.actions[n + 1]),
                              f"never runs: the handoff in step {n + 1} ends the workflow "
                              f"({later} step{'s' if later > 1 else ''} after it)",
                              ("workflows", i, "actions", n + 1))
            return
        if step.delay is not None and n + 1 == len(wf.actions):
            yield LintWarning("unreachable-step", wf.name, _step_where(n, step),
                              "a delay at the end waits for nothing; remove it or add steps "
                              "after it", ("workflows", i, "actions", n))


def _set_fields(workflows: Sequence[Workflow]) -> set[str]:
    out: set[str] = set(_PROFILE_FIELDS)
    for wf in workflows:
        for step in wf.actions:
            if step.set_ is not None:
                out.update(step.set_)
            if step.ask is not None:
                out.add(step.ask.field)
    return out


def _text_problems(wf: Workflow, i: int, known_fields: set[str], links: Collection[str],
                   url_size: int | None) -> Iterator[LintWarning]:
    for n, step in enumerate(wf.actions):
        where = _step_where(n, step)
        for t in step_texts(step):
            path: Path_ = ("workflows", i, "actions", n, *t.path)
            problem = length_problem(t, url_size)
            if problem:
                yield LintWarning("text-too-long", wf.name, where, problem, path)
            for m in _PLACEHOLDER_RE.finditer(t.template):
                name, fallback = m.group(1), m.group(2)
                known = BUILTIN_PLACEHOLDERS | known_fields
                if name in known:
                    continue
                close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
                if fallback is None or close:
                    # A fallback covers a field that may be unset, not a misspelt one: with
                    # one, {usernmae|there} would always say "there".
                    hint = (f" (did you mean {{{close[0]}}}?)" if close else
                            f"; set it or give a fallback: {{{name}|...}}")
                    yield LintWarning("unknown-field", wf.name, where,
                                      f"{t.label} uses {{{name}}}, which no workflow sets "
                                      f"(set: or ask:), so it renders "
                                      f"{'its fallback' if fallback is not None else 'empty'}"
                                      f"{hint}", path)
            for m in _LINKISH_RE.finditer(t.template):
                token, name = m.group(0), m.group(1)
                if not LINK_TOKEN_RE.fullmatch(token):
                    yield LintWarning("malformed-link", wf.name, where,
                                      f"{token} is not a tracked link and would be sent as "
                                      "written; link names are letters, digits, '.', '_' and "
                                      "'-' with no spaces: {link:NAME}", path)
                elif name not in links:
                    why = (f"names no tracked link (defined: {', '.join(sorted(links))})"
                           if links else
                           "is sent as written: no named links are defined (http(s) URLs in "
                           "texts are tracked automatically, so write the URL itself)")
                    yield LintWarning("unknown-link", wf.name, where, f"{token} {why}", path)
    for name in wf.when.fields:
        if name not in known_fields:
            yield LintWarning("unknown-field", wf.name, "when",
                              f"condition on field {name!r}, which no workflow sets (set: or "
                              "ask:)", ("workflows", i, "when", "fields", name))


def _stage_problems(workflows: Sequence[Workflow]) -> Iterator[LintWarning]:
    set_by_steps = {step.stage for wf in workflows for step in wf.actions
                    if step.stage is not None}
    known = [*LEAD_STAGES, *sorted(set_by_steps - set(LEAD_STAGES))]

    def hint(name: str, among: Sequence[str]) -> str:
        close = difflib.get_close_matches(name, among, n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""

    for i, wf in enumerate(workflows):
        for n, step in enumerate(wf.actions):
            # A stage of your own ("vip") is allowed; one a letter away from a lead stage
            # is a typo.
            close = hint(step.stage, LEAD_STAGES) if step.stage is not None else ""
            if step.stage is not None and step.stage not in LEAD_STAGES and close:
                yield LintWarning(
                    "unknown-stage", wf.name, _step_where(n, step),
                    f"stage {step.stage!r} is none of the lead stages "
                    f"({', '.join(LEAD_STAGES)}){close}: lead scoring does not rank a stage "
                    "of your own", ("workflows", i, "actions", n, "stage"))
        for k, name in enumerate(wf.when.stage):
            if name not in known:
                yield LintWarning(
                    "unknown-stage", wf.name, "when",
                    f"condition on stage {name!r}, which is no lead stage and which no "
                    f"workflow sets{hint(name, known)}: it holds only for contacts you give "
                    "that stage yourself (instaset contacts set)",
                    ("workflows", i, "when", "stage", k))


def lint_workflows(
    workflows: Sequence[Workflow], *, links: Collection[str] = (),
    tracked_url_size: int | None = None,
) -> list[LintWarning]:
    """Warnings about ``workflows`` (see the module docs). ``links``: the names of the
    named links defined in the config (none so far: every ``{link:NAME}`` is flagged);
    ``tracked_url_size``: the length of a tracked URL (``{public_url}/l/CODE``) when link
    tracking rewrites URLs, for the length checks."""
    shadow = list(_shadowed(workflows))
    shadowed = {w.workflow for w in shadow}
    fields = _set_fields(workflows)
    out: list[LintWarning] = [*shadow, *_duplicates(workflows, shadowed),
                              *_stage_problems(workflows)]
    for i, wf in enumerate(workflows):
        out += _keyword_problems(wf, i)
        out += _comment_problems(wf, i)
        out += _unreachable(wf, i)
        out += _text_problems(wf, i, fields, links, tracked_url_size)
    return sorted(out, key=lambda w: _sort_key(w.path))


_KEY_ORDER = {"trigger": 0, "when": 1, "actions": 2}


def _sort_key(path: Path_) -> tuple[tuple[int, int, str], ...]:
    """File order: by workflow, then trigger, when, actions, then position."""
    return tuple((p, 0, "") if isinstance(p, int) else (-1, _KEY_ORDER.get(p, 9), p)
                 for p in path)


def _config_links(config: Config) -> Collection[str]:
    # Named links would be a ``links:`` section; until the config has one, none exist.
    links = getattr(config, "links", None)
    if links is None:
        return ()
    if isinstance(links, dict):
        return set(links)
    return {str(getattr(item, "name", item)) for item in links}


def _position_of(root: yaml.Node | None, path: Path_) -> tuple[int, int] | None:
    """The line and column (1-based) of the deepest part of ``path`` present in the YAML: the
    key's when that part is a mapping key (``- reply:``), else the item's."""
    parts, node, key = locate(root, path)
    found = key if key is not None else node
    if not parts or found is None:
        return None
    return found.start_mark.line + 1, found.start_mark.column + 1


def _unhandled_payloads(config: Config) -> Iterator[LintWarning]:
    """An ice breaker or menu item whose payload no enabled workflow's ``postback`` trigger
    names: tapping it sends a message nothing answers."""
    handled = {p for wf in config.workflows if wf.enabled and wf.trigger.postback is not None
               for p in wf.trigger.postback.payload}
    sections: tuple[tuple[str, Sequence[IceBreaker | MenuItem]], ...] = (
        ("ice_breakers", config.ice_breakers or ()), ("menu", config.menu or ()))
    for section, items in sections:
        for i, item in enumerate(items):
            if item.payload is not None and item.payload not in handled:
                yield LintWarning(
                    "unhandled-payload", section, f"item {i + 1}",
                    f"tapping it sends {item.payload!r}, which no workflow's postback trigger"
                    f" names, so nothing answers (add `postback: {{payload: [{item.payload}]}}`"
                    " to a workflow's trigger)",
                    (section, i, "payload"))


def lint_config(
    config: Config, *, text: str | None = None, filename: str | None = None
) -> list[LintWarning]:
    """:func:`lint_workflows` on ``config``, each warning located at ``file:line:column`` in the
    YAML it was loaded from (``text`` overrides reading ``config.source``, ``filename``
    the name shown), sorted by workflow, then line."""
    public = config.server.public_url
    # instaset.links rewrites each URL to {public_url}/l/ + a 10-character code.
    url_size = len(public.rstrip("/")) + 13 if public else None
    warnings = lint_workflows(config.workflows, links=_config_links(config),
                              tracked_url_size=url_size) + list(_unhandled_payloads(config))
    if filename is None:
        filename = str(config.source) if config.source is not None else "config.yaml"
    root: yaml.Node | None = None
    try:
        if text is None and config.source is not None:
            text = Path(config.source).read_text("utf-8")
        if text is not None:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        root = None  # the config itself loaded; lines are a nicety
    located: list[LintWarning] = []
    for w in warnings:
        line, column = _position_of(root, w.path) or (None, None)
        located.append(replace(w, file=filename, line=line, column=column))
    return sorted(located, key=lambda w: (w.path[1], w.line or 0, w.column or 0))
