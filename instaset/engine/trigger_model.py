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

import importlib
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


def nested_repeat(pattern: str) -> bool:
    """Whether ``pattern`` (a valid regex) repeats without bound a group made of nothing but
    repeats (or alternatives of them), one of variable length: ``(a+)+``, ``(\\w+\\s?)*``,
    ``(\\d{1,3}[,.]?)+``, ``(\\w+|\\d+)+``. A text can then be split between the
    iterations in exponentially many ways, and a failing match tries them all on the
    daemon's one event loop (Python's ``re`` has no time limit). A group with anything fixed
    in it (``(\\w+\\.)+``, ``(very\\s+)+``), fixed-length repeats and optional characters
    only (``(\\d{3}[- ]?)+``) or a bounded outer repeat is not flagged. Read from the parsed
    pattern (CPython's own ``re._parser``)."""
    # Private modules (typeshed has no stubs for them): looked up by name.
    sre: Any = importlib.import_module("re._parser")
    c: Any = importlib.import_module("re._constants")
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT)

    def only_repeats(items: Any) -> tuple[bool, bool]:
        """(the items are repeats, groups or alternatives of them only; one of them has a
        variable length)"""
        variable = False
        for op, av in items:
            if op in repeats:
                # A variable length over more than one character (an optional separator,
                # `[- ]?`, splits nothing: `(\\d{3}[- ]?)+` is linear).
                variable = variable or (av[0] != av[1] and av[1] > 1)
            elif op is c.SUBPATTERN:
                ok, inner = only_repeats(av[-1])
                if not ok:
                    return False, False
                variable = variable or inner
            elif op is c.BRANCH:
                for branch in av[1]:
                    ok, inner = only_repeats(branch)
                    if not ok:
                        return False, False
                    variable = variable or inner
            else:
                return False, False
        return bool(items), variable

    def walk(items: Any) -> bool:
        for op, av in items:
            if op in repeats:
                _low, high, sub = av
                if high is c.MAXREPEAT and all(only_repeats(sub)):
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

    return walk(sre.parse(pattern))


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
                except re.error as exc:
                    bad.append(f"invalid regex {kw!r}: {exc}")
                    continue
                if nested_repeat(kw):
                    bad.append(f"regex {kw!r} repeats a group that itself repeats (like "
                               "(a+)+): a short message can make it run for minutes and stall "
                               "the daemon; drop the outer repeat (a+) or use match: word")
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
