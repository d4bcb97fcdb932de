"""Answers to an ``ask`` step: whether a reply is a valid email, phone, choice or text, and
the value to store (pure)."""

from __future__ import annotations

import re
import unicodedata

from instaset.engine.model import AskSpec, AskType
from instaset.engine.triggers import fold, strip_edges

__all__ = ["validate_answer"]

# The domain ends in a TLD of letters, and has no empty label ("example..com").
_EMAIL_RE = re.compile(r"^[^@\s]+@(?!.*\.\.)[^@\s]+\.[^\W\d_]{2,}$")
_EMAIL_EDGES = "<>()[]{}\"'`.,;:!?«»“”‘’"
# Separators people put in phone numbers, the typographic dashes included.
_PHONE_STRIP_RE = re.compile(r"[\s().\-/\u2010-\u2015\u2212]")
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def _email_token(word: str) -> str:
    """A word holding an address without what is glued around it: brackets and quotes,
    and trailing punctuation or emoji ("anna@x.com🙏", "anna@x.com…")."""
    word = word.strip(_EMAIL_EDGES)
    end = len(word)
    while end and not word[end - 1].isalnum():
        end -= 1
    return word[:end]


def _ascii_digits(text: str) -> str:
    """Decimal digits of any script (full-width, Arabic-Indic...) as ASCII; superscripts
    and other non-decimal digits stay as they are (and then fail the check)."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def validate_answer(ask: AskSpec, text: str | None, payload: str | None) -> str | None:
    """The value to store for an answer to ``ask``, or ``None`` when it is invalid.

    email: trimmed, domain lowercased; phone: 7-15 digits, separators dropped, ``+`` kept;
    choice: the configured choice (matched case- and accent-insensitively, by text or
    quick-reply payload); text: any non-empty text."""
    answer = (text or "").strip()
    if ask.type is AskType.EMAIL:
        # People write "my email is anna@x.com." or "<anna@x.com>": the one address in the
        # message is the answer; none, or two, is not.
        found = [_email_token(w) for w in answer.split()
                 if "@" in w and not w.startswith("@")]  # "@anna_fit" is a handle
        if len(found) != 1 or not _EMAIL_RE.match(found[0]):
            return None
        local, _, domain = found[0].rpartition("@")
        return f"{local}@{domain.lower()}"
    if ask.type is AskType.PHONE:
        compact = _ascii_digits(_PHONE_STRIP_RE.sub("", answer))
        digits = compact[1:] if compact.startswith("+") else compact
        if not _ASCII_DIGITS.fullmatch(digits) or not 7 <= len(digits) <= 15:
            return None
        return compact
    if ask.type is AskType.CHOICE:
        for candidate in (payload, answer, strip_edges(answer)):
            if candidate:
                for choice in ask.choices:
                    if fold(choice) == fold(candidate):
                        return choice
        return None
    return answer or None
