"""A workflow list compiled once for :func:`~instaset.engine.decide.decide` (pure).

``decide`` runs once per event in the live worker and 100,000 times in a replay, so it must
not scan every workflow's triggers nor sort the workflows on every call. :class:`CompiledWorkflows`
holds, built once per workflow list:

- the enabled workflows in the order ``decide`` tries them (priority, higher first, then file
  order), the ``fallback`` ones apart, and a name lookup;
- an index from what an event carries (a folded word of its text, its exact folded text, a
  postback payload, a story mention, a referral, a first message) to the workflows whose
  trigger *could* fire on it.

The index only prunes: a workflow it leaves out can never match the event, and every
candidate is still judged by :func:`~instaset.engine.triggers.match_trigger`, so the indexed
``decide`` returns exactly what the plain scan (:func:`~instaset.engine.decide.decide_scan`)
returns. Why a word index is sound: in ``word`` and ``any_word`` modes a keyword (folded)
matches only where each of its word runs (:data:`~instaset.engine.triggers.WORD_CHAR`
``+``: scripts written without spaces make no runs) is a whole word run of the folded text,
since the keyword is glued to no word character on a side where it starts or ends with one.
So a keyword is reachable through any one of its runs (the longest is used, being the most
selective). Keywords without a word run (emoji, punctuation) and ``contains`` keywords are
matched as plain text, so a substring test on the folded text selects them exactly; only
``regex`` keywords and keyword-less triggers are tried on every text.

:func:`compiled` caches the compiled form per workflow list (keyed by the list's identity,
checked against a snapshot of its items, so a list changed in place is recompiled), so
callers keep passing plain lists. A :class:`CompiledWorkflows` is itself a sequence of the
workflows in their original order and may be passed wherever a workflow list is expected.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from instaset.engine.model import MatchMode, TriggerKeywords, Workflow
from instaset.engine.triggers import WORD_CHAR, fold, inbound_dm, strip_edges
from instaset.events import CommentEvent, Event, EventKind, PostbackEvent, ReferralEvent

__all__ = ["CompiledWorkflows", "KeywordIndex", "compiled"]

_WORD_RUN_RE = re.compile(WORD_CHAR + "+")  # the runs of spaced scripts (see triggers)
_NONE: frozenset[int] = frozenset()


class KeywordIndex:
    """Which of some keyword triggers (identified by rank) may match a text.

    ``candidates(text)`` is a superset of the ranks whose
    :func:`~instaset.engine.triggers.match_keywords` is not ``None`` for ``text``:

    - ``exact``: the folded text without its edges, looked up (a precise test);
    - ``word``/``any_word`` pieces with a word run: looked up by their longest run among the
      text's runs (a necessary condition, see the module docs);
    - ``contains`` keywords and pieces without a word run (emoji, punctuation): a substring
      test on the folded text (precise: such a piece is matched as plain text);
    - ``regex`` keywords and keyword-less triggers: always candidates."""

    __slots__ = ("always", "exact", "substrings", "words")

    def __init__(self, entries: Iterable[tuple[int, TriggerKeywords]]) -> None:
        always: set[int] = set()
        words: dict[str, set[int]] = {}
        exact: dict[str, set[int]] = {}
        substrings: dict[str, set[int]] = {}
        for rank, spec in entries:
            if not spec.keywords:  # matches any text, even none
                always.add(rank)
                continue
            for keyword in spec.keywords:
                folded = fold(keyword)
                if spec.match is MatchMode.EXACT:
                    exact.setdefault(strip_edges(folded), set()).add(rank)
                elif spec.match is MatchMode.REGEX:
                    always.add(rank)  # no cheap necessary condition
                elif spec.match is MatchMode.CONTAINS:
                    if folded:  # an empty piece is never matched
                        substrings.setdefault(folded, set()).add(rank)
                else:
                    pieces = folded.split() if spec.match is MatchMode.ANY_WORD else [folded]
                    for piece in pieces:
                        if not piece:
                            continue
                        runs = _WORD_RUN_RE.findall(piece)
                        if runs:
                            words.setdefault(max(runs, key=len), set()).add(rank)
                        else:
                            substrings.setdefault(piece, set()).add(rank)
        self.always = frozenset(always)
        self.words = {k: frozenset(v) for k, v in words.items()}
        self.exact = {k: frozenset(v) for k, v in exact.items()}
        self.substrings = tuple((k, frozenset(v)) for k, v in substrings.items())

    def candidates(self, text: str | None) -> frozenset[int] | set[int]:
        if not text or not (self.words or self.exact or self.substrings):
            return self.always
        folded = fold(text)
        found: set[int] = set(self.always)
        words = self.words
        if words:
            for run in _WORD_RUN_RE.findall(folded):
                hit = words.get(run)
                if hit is not None:
                    found |= hit
        if self.exact:
            hit = self.exact.get(strip_edges(folded))
            if hit is not None:
                found |= hit
        for piece, ranks in self.substrings:
            if piece in folded:
                found |= ranks
        return found


class CompiledWorkflows(Sequence[Workflow]):
    """The workflows of one config, compiled for ``decide`` (see the module docs).

    As a sequence it is the workflows in their original order. ``ordered`` are the enabled
    ones in the order ``decide`` tries them; ranks are indexes into ``ordered``."""

    __slots__ = (
        "_comment", "_dm", "_first_message", "_live_comment", "_postback", "_referral",
        "_story_mention", "_story_reply", "by_name", "fallbacks", "ordered", "workflows",
    )

    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self.workflows: tuple[Workflow, ...] = tuple(workflows)
        ranked = sorted(enumerate(self.workflows), key=lambda p: (-p[1].priority, p[0]))
        self.ordered: tuple[Workflow, ...] = tuple(wf for _, wf in ranked if wf.enabled)
        self.fallbacks: tuple[Workflow, ...] = tuple(
            wf for wf in self.ordered if wf.trigger.fallback is not None
        )
        by_name: dict[str, Workflow] = {}
        for wf in self.workflows:
            by_name.setdefault(wf.name, wf)  # the first of a name, like a scan would find
        self.by_name = by_name
        postback: dict[str, set[int]] = {}
        story_mention: list[int] = []
        referral: list[int] = []
        first_message: list[int] = []
        for rank, wf in enumerate(self.ordered):
            t = wf.trigger
            if t.postback is not None:
                for payload in t.postback.payload:
                    postback.setdefault(payload, set()).add(rank)
            if t.story_mention is not None:
                story_mention.append(rank)
            if t.referral is not None:
                referral.append(rank)
            if t.first_message is not None:
                first_message.append(rank)
        self._postback = {k: frozenset(v) for k, v in postback.items()}
        self._story_mention = frozenset(story_mention)
        self._referral = frozenset(referral)
        self._first_message = frozenset(first_message)
        triggers = [(rank, wf.trigger) for rank, wf in enumerate(self.ordered)]
        self._dm = KeywordIndex((r, t.dm) for r, t in triggers if t.dm is not None)
        self._story_reply = KeywordIndex(
            (r, t.story_reply) for r, t in triggers if t.story_reply is not None
        )
        self._comment = KeywordIndex((r, t.comment) for r, t in triggers if t.comment is not None)
        self._live_comment = KeywordIndex(
            (r, t.live_comment) for r, t in triggers if t.live_comment is not None
        )

    # --- Sequence[Workflow] ---------------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> Workflow: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Workflow]: ...

    def __getitem__(self, index: int | slice) -> Workflow | Sequence[Workflow]:
        return self.workflows[index]

    def __len__(self) -> int:
        return len(self.workflows)

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self.workflows)

    def __repr__(self) -> str:
        return f"CompiledWorkflows({[wf.name for wf in self.workflows]!r})"

    # --- lookups --------------------------------------------------------------------------

    def find(self, name: str) -> Workflow | None:
        """The (first) workflow named ``name``, enabled or not."""
        return self.by_name.get(name)

    def handles_payload(self, payload: str) -> bool:
        """Whether an enabled workflow's ``postback`` trigger names ``payload``."""
        return payload in self._postback

    def candidates(self, event: Event, is_new: bool) -> list[Workflow]:
        """The enabled workflows whose trigger may fire on ``event``, in the order ``decide``
        tries them: a superset of those :func:`match_trigger` accepts (``fallback`` aside).
        ``is_new`` is whether the contact never messaged before the event."""
        if event.is_from_business:
            return []
        ranks: frozenset[int] | set[int]
        if isinstance(event, CommentEvent):
            if event.kind is EventKind.COMMENT:
                ranks = self._comment.candidates(event.text)
            elif event.kind is EventKind.LIVE_COMMENT:
                ranks = self._live_comment.candidates(event.text)
            else:
                return []
        elif isinstance(event, PostbackEvent):
            ranks = _NONE if event.payload is None else self._postback.get(event.payload, _NONE)
        elif isinstance(event, ReferralEvent):
            ranks = self._referral
        else:
            dm = inbound_dm(event)
            if dm is None:
                return []
            found = set(self._dm.candidates(dm.text))
            if dm.quick_reply_payload is not None:
                found |= self._postback.get(dm.quick_reply_payload, _NONE)
            if self._story_mention and any(a.type == "story_mention" for a in dm.attachments):
                found |= self._story_mention
            if dm.reply_to_story is not None:
                found |= self._story_reply.candidates(dm.text)
            if dm.referral is not None:
                found |= self._referral
            if is_new:
                found |= self._first_message
            ranks = found
        if not ranks:
            return []
        ordered = self.ordered
        if len(ranks) == 1:
            return [ordered[next(iter(ranks))]]
        return [ordered[r] for r in sorted(ranks)]


# The compiled form of the workflow lists decide() has seen lately, by the list's identity. The
# entry keeps the list alive (so its id cannot be reused by another list while cached) and a
# snapshot of its items (a list edited in place no longer equals it and is recompiled).
_CACHE_SIZE = 32
_cache: dict[int, tuple[Sequence[Workflow], tuple[Workflow, ...], CompiledWorkflows]] = {}
_lock = threading.Lock()


def compiled(workflows: Sequence[Workflow]) -> CompiledWorkflows:
    """The compiled form of ``workflows``: itself when already compiled, else built once and
    cached (the last few lists seen), so calling this per event costs a lookup and a
    comparison of the items with the cached snapshot (identity first, so cheap)."""
    if isinstance(workflows, CompiledWorkflows):
        return workflows
    key = id(workflows)
    hit = _cache.get(key)
    snapshot = tuple(workflows)
    if hit is not None and hit[0] is workflows and hit[1] == snapshot:
        return hit[2]
    result = CompiledWorkflows(snapshot)
    with _lock:
        _cache.pop(key, None)
        while len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = (workflows, snapshot, result)
    return result
