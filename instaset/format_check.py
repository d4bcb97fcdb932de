"""Checking a ``str.format`` message template at config load.

Some configured texts (the booking messages) are filled with :meth:`str.format` and a fixed
set of names, unlike workflow texts (:mod:`instaset.engine.templating`, which has fallbacks
and leaves a lone brace alone). An unknown name or a lone ``{`` / ``}`` in such a text would
raise at send time, every time; :func:`format_problem` finds it when the config is loaded.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from string import Formatter


def _can_use(names: Sequence[str]) -> str:
    if not names:
        return "this message takes no placeholders"
    return "this message can use " + ", ".join(f"{{{n}}}" for n in names)


def format_problem(text: str, names: Sequence[str]) -> str | None:
    """What is wrong with ``text`` as a template that is filled with
    ``text.format(**{name: ... for name in names})``, in words, or None when it is fine.

    Only plain ``{name}`` placeholders of ``names`` are allowed: no positional ``{}``, no
    ``{name.attr}`` or ``{name[0]}``, no ``!r`` conversion or ``:spec`` format. A literal
    brace is written twice (``{{``, ``}}``)."""
    try:
        parts = list(Formatter().parse(text))
    except ValueError as exc:
        closing = "'}'" in str(exc) and "Single" in str(exc)
        brace = "}" if closing else "{"
        return f"a lone '{brace}': write {brace * 2} for a literal '{brace}' ({_can_use(names)})"
    unknown: list[str] = []
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        written = "{" + field + (f"!{conversion}" if conversion else "") + (
            f":{spec}" if spec else "") + "}"
        if field in names:
            if conversion or spec:
                return (f"placeholder {written}: write it as {{{field}}}, with nothing after "
                        "the name")
            continue
        if written not in unknown:
            unknown.append(written)
    if not unknown:
        return None
    hints = []
    for written in unknown:
        name = written[1:-1].strip().lower()
        base = re.split(r"[.\[]", name)[0]  # {when.year}, {when[0]}
        close = [base] if base in names else difflib.get_close_matches(
            name, list(names), n=1, cutoff=0.75)
        if close:
            hints.append(f"did you mean {{{close[0]}}}? ")
    literal = not all(w[1:-1].isidentifier() for w in unknown)
    plural = "s" if len(unknown) > 1 else ""
    return (f"unknown placeholder{plural} {', '.join(unknown)} ({''.join(hints)}"
            f"{_can_use(names)}{'; write {{ and }} for a literal brace' if literal else ''})")


__all__ = ["format_problem"]
