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


def printable(text: str) -> str:
    """As :func:`one_line`, but line breaks stay (a message's own lines, in a thread view);
    every other control or format character is a space."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(_controls_blank(line) for line in lines)
