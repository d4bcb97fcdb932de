"""Message templates: ``{placeholder}`` substitution for workflow texts.

Syntax (small on purpose, so a creator can read it without docs):

- ``{username}``: the contact's Instagram username. ``{first_name}``: the ``first_name``
  field, else the first word of the ``name`` field (from the user profile), else empty.
- ``{text}``: the text of the message or comment being answered.
- ``{email}``, ``{plan}``, any other ``{name}``: a contact field (see ``set:`` and ``ask:``).
  A placeholder may name a fallback after a bar: ``{first_name|there}``. A placeholder whose
  value is missing renders as its fallback, or as an empty string without one (never as the
  raw ``{name}``, which would look broken to the contact).
- ``{link:NAME}``: a tracked link. The engine leaves the token **unchanged**; the sender
  resolves it to the tracked URL of the link named ``NAME`` just before sending (so link
  tracking, which needs the database, stays out of the pure engine).
- Anything else between braces (``{ 1, 2 }``, ``{}``, JSON) is left exactly as written.

``placeholders(template)`` lists the names a template uses so validators can check them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

__all__ = [
    "BUILTIN_PLACEHOLDERS",
    "LINK_TOKEN_RE",
    "URL_RE",
    "has_placeholders",
    "link_names",
    "placeholders",
    "render",
]

#: Placeholder names that are always available, beside contact fields.
BUILTIN_PLACEHOLDERS: frozenset[str] = frozenset({"username", "first_name", "text"})

_PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*)(?:\|([^{}]*))?\}")
#: Matches a tracked-link token; group 1 is the link name. The sender replaces these.
LINK_TOKEN_RE = re.compile(r"\{link:([A-Za-z0-9_.-]+)\}")
#: An http(s) URL in a text: printable ASCII but for quotes, ``<`` and ``>``, and letters
#: and digits of any script (``/wiki/Straße``). Emoji, "…" and CJK punctuation end it: a
#: creator writes "guide💪" or "guide。ぜひ" with no space (the sender's link tracking and
#: the text-length lint use this).
URL_RE = re.compile(r"https?://(?:[!#-&(-;=?-_a-~]|[^\W\x00-\x7f])+", re.IGNORECASE)


def placeholders(template: str) -> set[str]:
    """Names of the ``{name}`` placeholders in ``template`` (not links)."""
    return {m.group(1) for m in _PLACEHOLDER_RE.finditer(template)}


def link_names(template: str) -> set[str]:
    """Names of the ``{link:NAME}`` tokens in ``template``."""
    return {m.group(1) for m in LINK_TOKEN_RE.finditer(template)}


# A parsed template: literal text and (name, fallback) placeholders, in order.
_Part = str | tuple[str, str | None]


@lru_cache(maxsize=2048)
def _parse(template: str) -> tuple[_Part, ...] | None:
    """``template`` split at its placeholders (parsed once per template), or ``None`` when it
    has none (it renders as itself)."""
    parts: list[_Part] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(template):
        if m.start() > pos:
            parts.append(template[pos : m.start()])
        parts.append((m.group(1), m.group(2)))
        pos = m.end()
    if not parts:
        return None
    if pos < len(template):
        parts.append(template[pos:])
    return tuple(parts)


def has_placeholders(template: str) -> bool:
    """Whether ``template`` has a ``{name}`` placeholder (i.e. ``render`` may change it)."""
    return "{" in template and _parse(template) is not None


def render(template: str, values: Mapping[str, str], extra: Mapping[str, str] | None = None) -> str:
    """Substitute placeholders in ``template``.

    ``values`` are the contact's fields plus built-ins (the engine builds them from the
    conversation state); ``extra`` wins over ``values`` (event-specific values such as
    ``text``). Link tokens and non-placeholder braces are left untouched. Pure.
    """
    parts = _parse(template) if "{" in template else None
    if parts is None:
        return template
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name, default = part
        if extra is not None and extra.get(name):
            out.append(extra[name])
            continue
        value = values.get(name)
        out.append(value if value else (default if default is not None else ""))
    return "".join(out)
