"""Someone else's text, made safe to log or print on one line.

Contract: :func:`one_line` turns every control, format, surrogate or unassigned character
(newlines, ANSI escapes, bidi overrides, ...) into a space and collapses runs of
whitespace, so what a browser, Meta or another server sent can neither forge a log line nor
reorder or recolour a terminal. Standard library only (the CLI imports it at start-up).
"""

from __future__ import annotations

import unicodedata


def _controls_blank(text: str) -> str:
    return "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)


def one_line(text: str) -> str:
    return " ".join(_controls_blank(text).split())


# A refusal's words (``sends.detail``, up to 1000 characters) as a listing shows them: one
# line, cut here (``inbox show`` and the TUI's thread; ``--json`` and export keep them whole).
DETAIL_CHARS = 160


def shortened(text: str | None, limit: int) -> str:
    """:func:`one_line`, cut to at most ``limit`` characters (the last one an ellipsis
    when it was cut)."""
    t = one_line(text or "")
    return t if len(t) <= limit else t[: limit - 1] + "…"


def refusal_words(reason: str, detail: str | None) -> str:
    """``reason: detail`` on one line, the detail cut to :data:`DETAIL_CHARS`."""
    return one_line(reason) + (f": {shortened(detail, DETAIL_CHARS)}" if detail else "")


def printable(text: str) -> str:
    """As :func:`one_line`, but line breaks stay (a message's own lines, in a thread view);
    every other control or format character is a space."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(_controls_blank(line) for line in lines)
