"""Triggers of the workflow language: *when this happens* (the ``trigger:`` block of a
workflow in config.yaml), as pydantic models, and the check that keeps a keyword regex from
stalling the daemon.

Contract: every model is ``extra="forbid"`` and frozen, like the rest of
:mod:`instaset.engine.model` (which re-exports these names: the workflow language is read
from there). A trigger holds one kind or more (*any of them*); a DM trigger needs keywords;
a ``regex`` keyword is refused when it does not compile or when :func:`nested_repeat` finds
a repeat of a repeat (catastrophic backtracking on the daemon's one event loop). How a
trigger matches an event is :mod:`instaset.engine.triggers`' job, not this module's.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from instaset.engine.values import FrozenModel as _Model
from instaset.engine.values import StrList, true_or_block

__all__ = [
    "CommentTrigger",
    "DMTrigger",
    "EmptyTrigger",
    "MatchMode",
    "PostbackTrigger",
    "ReferralTrigger",
    "Trigger",
    "TriggerKeywords",
    "nested_repeat",
]


class MatchMode(StrEnum):
    """How keywords are compared with a text (always case- and accent-insensitive).

    - ``word`` (default): the keyword appears as whole word(s): "guide" matches "the guide!"
      but not "guidelines".
    - ``any_word``: any single word of the keyword appears as a whole word.
    - ``contains``: the keyword appears anywhere, even inside a word.
    - ``exact``: the whole message is the keyword (surrounding spaces and punctuation ignored).
    - ``regex``: a Python regular expression searched in the text.
    """

    WORD = "word"
    ANY_WORD = "any_word"
    CONTAINS = "contains"
    EXACT = "exact"
    REGEX = "regex"


# A bounded repeat (``{m,n}``) of an ambiguous group is refused once it allows more than this
# many ways to split a text between its iterations: ``(\d{1,3}){2}`` (9) is harmless,
# ``(\w{1,20}\s?){1,30}`` or ``(a|aa){1,30}`` is not.
_SPLIT_LIMIT = 1000
# A group is read as a finite set of words of character classes (``(a|\w\w)``: "a" and two
# word characters) only up to this many words; a bigger one is not checked for ambiguity.
_WORD_LIMIT = 64
# The characters two classes are compared on (``a`` and ``\w`` share one; ``\d`` and ``x``
# none): U+0000-024F (ASCII and Latin) and a few others (Greek, Cyrillic, non-ASCII digits,
# CJK, an emoji, odd spaces, the Kelvin sign that ``k`` matches case-insensitively).
_SAMPLE = tuple(chr(i) for i in range(0x250)) + tuple(
    "αΩяЯ٣߀中ー😀\u00a0\u2028\u212a\ufb01")
_CATEGORIES = {f"CATEGORY_{name}": re.compile(rx) for name, rx in (
    ("DIGIT", r"\d"), ("NOT_DIGIT", r"\D"), ("SPACE", r"\s"), ("NOT_SPACE", r"\S"),
    ("WORD", r"\w"), ("NOT_WORD", r"\W"), ("LINEBREAK", r"\n"), ("NOT_LINEBREAK", r"[^\n]"))}
_ANY_CHAR = re.compile(r"(?s).")  # a category not listed above: taken as any character
# A text as the character classes of its positions, each once (False) or any number of
# times, none included (True: ``\w+`` is ``(\w, False), (\w, True)``).
_Item = tuple[frozenset[str], bool]
_Word = tuple[_Item, ...]
# The steps (states of two words walked side by side) the ambiguity test takes at most: 52
# alternatives of 60 repeats each took 5 s to check; past this (under 0.1 s) a group is not
# checked, and accepted.
_STEP_LIMIT = 100_000


def repeat_refusal(pattern: str) -> str:
    """Why ``pattern`` (one :func:`nested_repeat` refuses) is refused, up to its fix: the
    keyword's and the lead rule's messages share it and add the fix each one allows."""
    return (f"regex {pattern!r} repeats a group that itself repeats, or that can spell one "
            "text in two ways (like (a+)+, (\\w+){1,30}, (a|aa)+ or (\\w+x|\\w)+): a short "
            "message can make it run for minutes and stall the daemon; drop the outer repeat")


class _TooLong(Exception):
    """The ambiguity test went past :data:`_STEP_LIMIT`."""


@functools.lru_cache(maxsize=1024)
def nested_repeat(pattern: str) -> bool:
    """Whether ``pattern`` (a valid regex) repeats a group that a text can fill in many
    ways, so that a failing match tries exponentially (or, for a repeat bounded at ``k``, to
    the power ``k + 1`` of the text's length) many splits on the daemon's one event loop
    (Python's ``re`` has no time limit). Refused, under a repeat that can run more than once:

    - a group of nothing but repeats (or alternatives of them), one of variable length:
      ``(a+)+``, ``(\\w+\\s?)*``, ``(\\d{1,3}[,.]?)+``, ``(\\w+|\\d+)+``, and bounded ones
      too: ``(\\w+){1,30}`` and even ``(\\w+){2}`` (16 s on a 2,200-character comment);
      a bounded repeat of bounded ones only when it allows over 1,000 splits
      (``(\\d{1,3}){2}``, 9, is accepted);
    - alternatives one of which is nothing but repeats, one of variable length:
      ``(\\d+|x)+``, ``(a|a*)+``, ``(hi|\\w+)+`` (that alternative alone splits a text);
    - a group (alternatives or not) of characters, small bounded repeats and unbounded
      repeats of one character or class, whose iterations can spell the same text in two
      ways (one alternative is a repetition or a combination of others, two share a text,
      or a variable part can take what starts the next iteration), found with the
      Sardinas-Patterson test over character classes, case folded as the daemon matches:
      ``(a|aa)+``, ``(ab|a|b)+``, ``(ab|[ab]b)+``, ``(\\w|ab)+``, ``(\\d|12)+``,
      ``(a|.)+``, and with a variable part ``(\\w+x|\\w)+``, ``(\\d+a|\\d)+``,
      ``(\\w+\\s|\\w)+``, ``(\\w+a)+``, ``(\\w+-\\w+)+`` (``a-bcd-e`` is
      ``a-b|cd-e`` or ``a-bc|d-e``); a bounded repeat of fixed ones only past 1,000
      splits, of ones with a variable part always. ``(hi|hey)+``, ``(ab|a\\d)+``,
      ``(\\w+\\.)+``, ``(very\\s+)+`` and ``(x+y)+`` are accepted (what ends an
      iteration cannot be taken by its variable part), and so are ``(a|\\w)+`` and
      ``(\\d|1)+``: CPython merges single-character alternatives into one set
      (``[a\\w]+``), which is linear. Not checked (accepted): a repeat of a group inside
      an alternative (``((ab)+x|a)+``), an unbounded repeat of more than 8 at least
      (``\\w{9,}``), a bounded one of more than 8 at most (``\\w{1,20}x``), lookarounds and
      backreferences, one alternative that takes one text in two ways by its own repeats
      (``(a\\w*\\w*b)+``), and a group that takes the test over 100,000 steps.

    Fixed-length repeats and optional characters only (``(\\d{3}[- ]?)+``, ``(a{2})+``)
    are accepted. Read from the parsed pattern (CPython's own ``re._parser``)."""
    # Private modules (typeshed has no stubs for them): looked up by name.
    sre: Any = importlib.import_module("re._parser")
    c: Any = importlib.import_module("re._constants")
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT)

    def only_repeats(items: Any) -> tuple[bool, float]:
        """(the items are repeats, groups or alternatives of them only; how many ways a
        text can be split between their variable-length repeats: 1 when none is, inf when
        one is unbounded)"""
        ways = 1.0
        for op, av in items:
            if op in repeats:
                # A variable length over more than one character (an optional separator,
                # `[- ]?`, splits nothing: `(\\d{3}[- ]?)+` is linear).
                if av[0] != av[1] and av[1] > 1:
                    ways *= float("inf") if av[1] is c.MAXREPEAT else av[1] - av[0] + 1
            elif op is c.SUBPATTERN:
                ok, inner = only_repeats(av[-1])
                if not ok:
                    return False, 1.0
                ways *= inner
            elif op is c.BRANCH:
                total = 0.0
                for branch in av[1]:
                    ok, inner = only_repeats(branch)
                    if not ok:
                        return False, 1.0
                    total += inner
                if total > len(av[1]):  # one branch or more of variable length
                    ways *= total
            else:
                return False, 1.0
        return bool(items), ways

    classes: dict[str, frozenset[str]] = {}

    def chars(op: Any, av: Any) -> frozenset[str] | None:
        """The characters (of :data:`_SAMPLE`, case folded as the daemon matches) that one
        single-character item matches; None when the item is not one."""
        if op is c.LITERAL:
            return frozenset(chr(av).lower())
        key = f"{op} {av!r}"  # each set once: a pattern may name one a thousand times
        if op is c.NOT_LITERAL and key not in classes:
            classes[key] = frozenset(
                ch.lower() for ch in _SAMPLE if ch.lower() != chr(av).lower())
        if op is c.ANY and key not in classes:  # a line break only under (?s)
            classes[key] = frozenset(ch.lower() for ch in _SAMPLE if ch != "\n" or dotall)
        if op is not c.IN:
            return classes.get(key)
        if key not in classes:
            negate = any(o is c.NEGATE for o, _ in av)

            def hit(ch: str) -> bool:
                for o, v in av:
                    if o is c.LITERAL and ch.lower() == chr(v).lower():
                        return True
                    if o is c.RANGE and any(v[0] <= ord(x) <= v[1] for x in (
                            ch, ch.lower(), ch.upper()) if len(x) == 1):  # "ß".upper(): SS
                        return True
                    if o is c.CATEGORY and _CATEGORIES.get(str(v), _ANY_CHAR).fullmatch(ch):
                        return True
                return False

            classes[key] = frozenset(ch.lower() for ch in _SAMPLE if hit(ch) != negate)
        return classes[key]

    def words(items: Any) -> list[_Word] | None:
        """The texts the items match, as words of character classes (``a\\w+`` is
        ``({a}, once), (word characters, once), (word characters, any number)``), one per
        way of matching (so a word twice means two ways); None when they are not all fixed
        characters, unbounded repeats of one (at least 8 at most), small fixed repeats and
        alternatives of them, or too many."""
        out: list[_Word] = [()]
        for op, av in items:
            one = chars(op, av)
            if one is not None:
                step: list[_Word] = [((one, False),)]
            elif (op in repeats and av[1] is c.MAXREPEAT and av[0] <= 8 and len(av[2]) == 1
                  and (each := chars(*av[2][0])) is not None):
                step = [((each, False),) * av[0] + ((each, True),)]
            elif op is c.SUBPATTERN:
                inner = words(av[-1])
                if inner is None:
                    return None
                step = inner
            elif op is c.BRANCH:
                step = []
                for branch in av[1]:
                    inner = words(branch)
                    if inner is None:
                        return None
                    step += inner
            elif op in repeats and av[1] is not c.MAXREPEAT and av[1] <= 8:
                inner = words(av[2])
                if inner is None:
                    return None
                step = []
                seq: list[_Word] = [()]
                for count in range(av[1] + 1):
                    if count >= av[0]:
                        step += seq
                    seq = [a + b for a in seq for b in inner]
                    if len(seq) > _WORD_LIMIT:
                        return None
            else:
                return None
            out = [a + b for a in out for b in step]
            if len(out) > _WORD_LIMIT:
                return None
        return out

    steps = 0

    def rests(head: _Word, whole: _Word) -> set[_Word]:
        """What can be left of ``whole`` after a non-empty text that ``head`` takes whole
        and ``whole`` starts with (at each position, a character both classes share): the
        states of the two words walked side by side, each at an item (or past its last)."""
        nonlocal steps
        left: set[_Word] = set()
        todo = [(0, 0, False)]
        seen = set(todo)
        while todo:
            steps += 1
            if steps > _STEP_LIMIT:
                raise _TooLong
            i, j, moved = todo.pop()
            if i == len(head) and moved:
                left.add(whole[j:])
            after = []
            if i < len(head) and head[i][1]:  # a repeat can take nothing more
                after.append((i + 1, j, moved))
            if j < len(whole) and whole[j][1]:
                after.append((i, j + 1, moved))
            if i < len(head) and j < len(whole) and not head[i][0].isdisjoint(whole[j][0]):
                after.append((i + (not head[i][1]), j + (not whole[j][1]), True))
            for state in after:
                if state not in seen:
                    seen.add(state)
                    todo.append(state)
        return left

    def ambiguous(found: list[_Word]) -> bool:
        """Whether a sequence of these words can spell one text in two ways: the
        Sardinas-Patterson test, with "is a prefix of" read as "can match the start of the
        same text" (classes that share a character), and what is left after a prefix (a
        suffix of a word) kept as words too, so the test ends. An empty word ends an
        iteration and is left out. Past :data:`_STEP_LIMIT` steps: False (not checked).
        Each group has the whole budget: a shared one let a large harmless group, checked
        first, leave every later group of the pattern unchecked."""
        nonlocal steps
        steps = 0
        try:
            return sardinas_patterson([w for w in found if w])
        except _TooLong:
            return False

    def sardinas_patterson(code: list[_Word]) -> bool:
        """:func:`ambiguous` for non-empty words (may raise :class:`_TooLong`)."""

        def empty(w: _Word) -> bool:  # takes the empty text
            return all(star for _, star in w)

        dangling: list[_Word] = []
        for i, a in enumerate(code):
            for j, b in enumerate(code):
                for left in rests(a, b):
                    if i == j and left == ():  # one word, one text: the same split
                        continue
                    if i != j and empty(left):  # two words (or one twice) take one text
                        return True
                    dangling.append(left)  # (of a word against itself: a longer text)
        seen = set(dangling)
        while dangling:
            d = dangling.pop()
            for w in code:
                for left in rests(w, d) | rests(d, w):
                    if empty(left):
                        return True
                    if left not in seen:
                        seen.add(left)
                        dangling.append(left)
        return False

    def branch_splits(sub: Any) -> float:
        """How many ways an iteration that is one set of alternatives can take the same
        text through one alternative made of repeats only (``(\\d+|x)+``, ``(a|a*)+``):
        that alternative alone splits a text between iterations."""
        while len(sub) == 1 and sub[0][0] is c.SUBPATTERN:
            sub = sub[0][1][-1]
        if len(sub) != 1 or sub[0][0] is not c.BRANCH:
            return 1.0
        most = 1.0
        for branch in sub[0][1][1]:
            ok, ways = only_repeats(branch)
            if ok:
                most = max(most, ways)
        return most

    def splits(sub: Any) -> float:
        """How many ways one iteration of ``sub`` can take the same text (1: one way)."""
        ok, ways = only_repeats(sub)
        if ok and ways > 1:
            return ways
        ways = branch_splits(sub)
        if ways > 1:
            return ways
        found = words(sub)
        if found is not None and ambiguous(found):
            # A variable part makes the ways per iteration grow with the text, as (\\w+){2}.
            if any(star for word in found for _, star in word):
                return float("inf")
            return float(len(found))
        return 1.0

    def walk(items: Any) -> bool:
        for op, av in items:
            if op in repeats:
                _low, high, sub = av
                if high is c.MAXREPEAT or high > 1:
                    ways = splits(sub)
                    # ways ** high, compared in logs (a float power overflows)
                    if ways > 1 and (high is c.MAXREPEAT
                                     or high * math.log(ways) > math.log(_SPLIT_LIMIT)):
                        return True
                if walk(sub):
                    return True
            elif op is c.SUBPATTERN:
                if walk(av[-1]):
                    return True
            elif op is c.BRANCH:
                if any(walk(branch) for branch in av[1]):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT) and walk(av[1]):
                return True
        return False

    parsed = sre.parse(pattern)
    dotall = bool(parsed.state.flags & re.DOTALL)
    return walk(parsed)


class TriggerKeywords(_Model):
    """Keywords plus a match mode; an empty keyword list matches any text."""

    keywords: StrList = ()
    match: MatchMode = MatchMode.WORD

    @model_validator(mode="after")
    def _check_keywords(self) -> TriggerKeywords:
        bad: list[str] = []  # every invalid regex at once, not one per validate run
        for kw in self.keywords:
            if not kw.strip():
                raise ValueError("keywords must not be empty strings")
            if self.match is MatchMode.REGEX:
                try:
                    re.compile(kw)
                # A count of 2**32 or more raises OverflowError, a deep nesting RecursionError.
                except (re.error, OverflowError, RecursionError) as exc:
                    bad.append(f"invalid regex {kw!r}: {exc}")
                    continue
                if nested_repeat(kw):
                    bad.append(repeat_refusal(kw) + " (a+), end each repeat with what its "
                               "variable part cannot take (\\w+(-\\w+)+ for (\\w+-\\w+)+), "
                               "or use match: word")
        if bad:
            raise ValueError("; ".join(bad))
        return self


class DMTrigger(TriggerKeywords):
    """An inbound DM text (story replies and quick-reply taps included) matching keywords."""

    @model_validator(mode="after")
    def _need_keywords(self) -> DMTrigger:
        if not self.keywords:
            raise ValueError("dm needs keywords (use fallback: true to answer any message)")
        return self


class CommentTrigger(TriggerKeywords):
    """A comment (or live comment) matching keywords (none = any comment).

    ``media``: ``any`` or a list of media ids. ``replies``: also fire on replies to comments
    (default: top-level comments only).
    """

    media: Literal["any"] | StrList = "any"
    replies: bool = False

    @field_validator("media", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        # YAML reads an unquoted id as a number (which may already have lost digits): name
        # the fix rather than "must be 'any' or a list".
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"a media id is text: put it in quotes, in a list: "
                             f"media: ['{value}']")
        return value


class EmptyTrigger(_Model):
    """A trigger with no options (``story_mention: true``, ``first_message: true``)."""


class PostbackTrigger(_Model):
    """A button, quick-reply, ice-breaker or persistent-menu tap with one of these payloads."""

    payload: StrList = Field(min_length=1)


class ReferralTrigger(_Model):
    """An ig.me link or ad referral with one of these ``ref`` values (none = any referral)."""

    ref: StrList = ()


Empty = Annotated[EmptyTrigger | None, true_or_block(EmptyTrigger)]


class Trigger(_Model):
    """What starts a workflow. Several kinds in one trigger mean *any of them*."""

    dm: DMTrigger | None = None
    comment: CommentTrigger | None = None
    live_comment: CommentTrigger | None = None
    # ``story_reply: true`` / ``referral: true``: any story reply / any referral (their
    # options are filters, none = any), as ``story_reply:`` alone already meant.
    story_reply: Annotated[TriggerKeywords | None, true_or_block(TriggerKeywords)] = None
    story_mention: Empty = None
    postback: PostbackTrigger | None = None
    referral: Annotated[ReferralTrigger | None, true_or_block(ReferralTrigger)] = None
    first_message: Empty = None
    fallback: Empty = None

    @model_validator(mode="before")
    @classmethod
    def _empty_blocks(cls, data: Any) -> Any:
        # ``story_mention:`` with no value is YAML null: the creator means "on".
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _at_least_one(self) -> Trigger:
        if not self.kinds():
            raise ValueError(
                "trigger needs one of: dm, comment, live_comment, story_reply, story_mention, "
                "postback, referral, first_message, fallback"
            )
        return self

    def kinds(self) -> tuple[str, ...]:
        """The trigger kinds set, in declaration order."""
        return tuple(name for name in type(self).model_fields if getattr(self, name) is not None)

    @property
    def on_comments(self) -> bool:
        return self.comment is not None or self.live_comment is not None
