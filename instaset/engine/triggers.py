"""Trigger matching: does an event start a workflow, and why (pure).

Text comparison is case- and accent-insensitive: both sides are *folded* (Unicode NFKD,
combining marks and variation selectors dropped, casefolded), so "Guía" matches "guia" and
"🔥" matches "🔥️". A *word* is a run of letters, digits or ``_``; emoji and punctuation are
not word characters, so an emoji keyword matches wherever the emoji appears. Neither are
the characters of scripts written without spaces (Chinese, Japanese, Thai...: see
:data:`WORD_CHAR`): a keyword in them matches wherever it appears.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from instaset.engine.model import CommentTrigger, MatchMode, Trigger, TriggerKeywords
from instaset.events import (
    CommentEvent,
    Event,
    EventKind,
    MessageEvent,
    PostbackEvent,
    ReferralEvent,
)

__all__ = [
    "FIRST_MESSAGE",
    "fold",
    "inbound_dm",
    "inbound_text",
    "match_keywords",
    "match_trigger",
    "strip_edges",
]


# Typographic apostrophes (iPhone "smart punctuation" types U+2019) read as the ASCII one;
# Turkish dotless ı as i (casefold turns "KAYIT" into "kayit", never into "kayıt").
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u0131": "i"})


#: The reason :func:`match_trigger` gives for a ``first_message`` match.
FIRST_MESSAGE = "first message from a new contact"


@lru_cache(maxsize=4096)
def fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text`` with whitespace collapsed; curly
    apostrophes are the ASCII one, Turkish ı is i."""
    if text.isascii():  # NFKD, NFC and mark stripping leave ASCII as it is
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return " ".join(unicodedata.normalize("NFC", kept.casefold()).split())


# Scripts written without spaces between words (Thai, Lao, Burmese, Khmer; Chinese and
# Japanese kanji and kana): no word edge can be found in them without a dictionary. A
# keyword's character of one of them needs no edge on its side, and such a character next
# to a keyword is no edge to cross either: in word mode "价格" is found in "请问价格多少",
# and "iphone" in "买iphone吗". (Korean spaces its words: it is not in the list.)
_UNSPACED = ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3005-\u3007\u3040-\u30ff"
             "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f")
WORD_CHAR = f"[^\\W{_UNSPACED}]"
"""A word character of a script that spaces its words (a regex character class)."""
_WORD_CHAR_RE = re.compile(WORD_CHAR)


def _is_word_char(ch: str) -> bool:
    return _WORD_CHAR_RE.match(ch) is not None


def strip_edges(text: str) -> str:
    """Drop surrounding spaces and punctuation (not emoji) for ``exact`` matching."""
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] == "P"


def _word_piece(word: str) -> str:
    """A regex for ``word`` not glued to other word characters, on each side where the word
    itself starts/ends with a word character (so emoji keywords match anywhere)."""
    left = f"(?<!{WORD_CHAR})" if _is_word_char(word[0]) else ""
    right = f"(?!{WORD_CHAR})" if _is_word_char(word[-1]) else ""
    return left + re.escape(word) + right


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A keyword list compiled once: one alternation (word modes), a lookup (exact) or the
    user's patterns (regex). ``owners[i]`` is the keyword of alternation group ``i + 1``."""

    pattern: re.Pattern[str] | None
    owners: tuple[str, ...]
    exact: dict[str, str]
    regexes: tuple[tuple[str, re.Pattern[str]], ...]
    # The alternation's words as plain text: a match needs one of them as a substring, and
    # `in` is far cheaper than the alternation (lookarounds tried at every position: about
    # 250 us on a 1 KB message), so most texts are ruled out before the regex runs.
    needles: tuple[str, ...] = ()


@lru_cache(maxsize=4096)
def _compile(keywords: tuple[str, ...], mode: MatchMode) -> _Compiled:
    if mode is MatchMode.REGEX:
        return _Compiled(None, (), {}, tuple((k, re.compile(k, re.IGNORECASE)) for k in keywords))
    if mode is MatchMode.EXACT:
        exact: dict[str, str] = {}
        for k in keywords:
            exact.setdefault(strip_edges(fold(k)), k)
        return _Compiled(None, (), exact, ())
    pieces: list[str] = []
    owners: list[str] = []
    needles: list[str] = []
    for k in keywords:
        folded = fold(k)
        words = folded.split() if mode is MatchMode.ANY_WORD else [folded]
        for w in words:
            if w:
                pieces.append(re.escape(w) if mode is MatchMode.CONTAINS else _word_piece(w))
                owners.append(k)
                needles.append(w)
    pattern = re.compile("|".join(f"({p})" for p in pieces)) if pieces else None
    return _Compiled(pattern, tuple(owners), {}, (), tuple(dict.fromkeys(needles)))


def match_keywords(spec: TriggerKeywords, text: str | None) -> str | None:
    """A keyword of ``spec`` matching ``text`` (``""`` when the spec has no keywords,
    meaning "any text"), or ``None`` when nothing matches. When several match, the one found
    first in the text wins (regex: the first in the list)."""
    if not spec.keywords:
        return ""
    if not text:
        return None
    folded = fold(text)
    c = _compile(spec.keywords, spec.match)
    if c.pattern is not None:
        if not any(n in folded for n in c.needles):
            return None
        m = c.pattern.search(folded)
        return c.owners[m.lastindex - 1] if m is not None and m.lastindex else None
    if c.regexes:
        for keyword, rx in c.regexes:
            if rx.search(text) is not None or rx.search(folded) is not None:
                return keyword
        return None
    return c.exact.get(strip_edges(folded))


def inbound_dm(event: Event) -> MessageEvent | None:
    """The event as an inbound DM from the contact (not an echo), else ``None``."""
    if (
        isinstance(event, MessageEvent)
        and event.kind is EventKind.MESSAGE
        and not event.is_from_business
    ):
        return event
    return None


def inbound_text(event: Event) -> str | None:
    """The text of an inbound DM, else ``None``."""
    dm = inbound_dm(event)
    return dm.text if dm is not None and dm.text else None


def _keyword_reason(kind: str, spec: TriggerKeywords, text: str | None) -> str | None:
    hit = match_keywords(spec, text)
    if hit is None:
        return None
    if hit == "":
        return f"any {kind}"
    return f"{kind} keyword {hit!r} matched ({spec.match.value})"


def _comment_reason(kind: str, spec: CommentTrigger, event: CommentEvent) -> str | None:
    if event.is_reply and not spec.replies:
        return None
    if spec.media != "any" and event.media_id not in spec.media:
        return None
    return _keyword_reason(kind, spec, event.text)


def match_trigger(trigger: Trigger, event: Event, is_new: bool) -> str | None:
    """Why ``trigger`` fires on ``event`` (a human-readable reason) or ``None``.

    ``is_new`` is whether the contact had never messaged before this event. ``fallback`` is
    never matched here: :func:`~instaset.engine.decide.decide` handles it once nothing else
    matched. Events from the business never match.
    """
    if event.is_from_business:
        return None
    if isinstance(event, CommentEvent):
        if trigger.comment is not None and event.kind is EventKind.COMMENT:
            return _comment_reason("comment", trigger.comment, event)
        if trigger.live_comment is not None and event.kind is EventKind.LIVE_COMMENT:
            return _comment_reason("live comment", trigger.live_comment, event)
        return None
    if isinstance(event, PostbackEvent):
        if trigger.postback is not None and event.payload in trigger.postback.payload:
            return f"postback {event.payload!r}"
        return None
    if isinstance(event, ReferralEvent):
        return _referral_reason(trigger, event.referral.ref)
    dm = inbound_dm(event)
    if dm is None:
        return None
    if (
        trigger.postback is not None
        and dm.quick_reply_payload is not None
        and dm.quick_reply_payload in trigger.postback.payload
    ):
        return f"quick reply {dm.quick_reply_payload!r}"
    if trigger.story_mention is not None and any(a.type == "story_mention" for a in dm.attachments):
        return "story mention"
    if trigger.story_reply is not None and dm.reply_to_story is not None:
        reason = _keyword_reason("story reply", trigger.story_reply, dm.text)
        if reason is not None:
            return reason
    if trigger.dm is not None:
        reason = _keyword_reason("dm", trigger.dm, dm.text)
        if reason is not None:
            return reason
    if trigger.referral is not None and dm.referral is not None:
        reason = _referral_reason(trigger, dm.referral.ref)
        if reason is not None:
            return reason
    if trigger.first_message is not None and is_new:
        return FIRST_MESSAGE
    return None


def _referral_reason(trigger: Trigger, ref: str | None) -> str | None:
    if trigger.referral is None:
        return None
    if not trigger.referral.ref:
        return f"referral {ref!r}" if ref else "referral"
    if ref is not None and ref in trigger.referral.ref:
        return f"referral ref {ref!r}"
    return None
