"""The texts a workflow step sends or stores, and Instagram's length limits on them. Split
from :mod:`instaset.workflow_lint`, which checks them (``text-too-long``, ``unknown-field``,
the link lints); :mod:`instaset.catchup` asks :func:`uses_profile_placeholders`.

Contract (pure, no I/O):

- :func:`step_texts` yields every text of one step, in YAML order (a reply's text, then its
  variants; an ask's prompt, then its retry text; a buttons text, then the button URLs; each
  card's title, subtitle and button URLs; a booking offer's text; a notify text; a handoff's
  note; the values of ``set:``), each with its YAML path relative to the step, the limit that
  applies and a label for messages. Limits: ``dm`` (DMs and private replies: 1000 bytes),
  ``public`` (public replies: 2200 characters), ``buttons`` (640), ``card`` (titles and
  subtitles: 80); ``url`` and ``internal`` texts have none.
- :func:`length_problem` says how a text goes over its limit after templating, with
  placeholders at their longest expected size (:data:`ASSUMED_SIZES`) and, when link tracking
  rewrites URLs, every URL but a public reply's at the tracked URL's length; None when it fits.
- :func:`uses_profile_placeholders` says whether an enabled workflow's text names
  ``{username}``, ``{first_name}`` or ``{name}`` (:data:`PROFILE_PLACEHOLDERS`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from instaset.engine.model import ActionStep, Workflow
from instaset.engine.templating import LINK_TOKEN_RE, URL_RE, placeholders, render

__all__ = [
    "ASSUMED_SIZES",
    "PROFILE_PLACEHOLDERS",
    "StepText",
    "length_problem",
    "step_texts",
    "uses_profile_placeholders",
]

_Path = tuple[str | int, ...]

#: Bytes a placeholder is assumed to take when checking lengths after templating:
#: Instagram usernames have at most 30 characters; ``text`` (the message answered) and other
#: contact fields are taken at a generous typical size; a ``{link:NAME}`` at a short URL's.
#: With ``server.public_url`` set, plain URLs count at their tracked length.
ASSUMED_SIZES: dict[str, int] = {"username": 30, "first_name": 30, "text": 100, "field": 50,
                                 "link": 60}

_DM_BYTES = 1000
_CHAR_LIMITS = {"public": 2200, "buttons": 640, "card": 80}


@dataclass(frozen=True, slots=True)
class StepText:
    """One text of a step: where it sits (``path``, relative to the step), as written
    (``template``), the limit that applies (``kind``) and its name in messages (``label``)."""

    path: _Path  # relative to the step
    template: str
    kind: str  # dm, public, buttons, card, url, internal
    label: str


def step_texts(step: ActionStep) -> Iterator[StepText]:
    """Every text of ``step``, in YAML order (see the module docs)."""
    kind = step.kind
    if kind in ("reply", "private_reply", "public_reply"):
        spec = step.value(kind)
        limit = "public" if kind == "public_reply" else "dm"
        if spec.text is not None:
            yield StepText((kind, "text"), spec.text, limit, "text")
        for k, v in enumerate(spec.variants):
            yield StepText((kind, "variants", k), v, limit, f"variant {k + 1}")
    elif step.ask is not None:
        yield StepText(("ask", "prompt"), step.ask.prompt, "dm", "prompt")
        if step.ask.retry is not None:
            yield StepText(("ask", "retry"), step.ask.retry, "dm", "retry text")
    elif step.buttons is not None:
        yield StepText(("buttons", "text"), step.buttons.text, "buttons", "text")
        for k, b in enumerate(step.buttons.buttons):
            if b.url:
                yield StepText(("buttons", "buttons", k, "url"), b.url, "url", f"button {k + 1}")
    elif step.template is not None:
        for e, el in enumerate(step.template.elements):
            base: _Path = ("template", "elements", e)
            yield StepText((*base, "title"), el.title, "card", f"card {e + 1} title")
            if el.subtitle:
                yield StepText((*base, "subtitle"), el.subtitle, "card", f"card {e + 1} subtitle")
            for k, b in enumerate(el.buttons):
                if b.url:
                    yield StepText((*base, "buttons", k, "url"), b.url, "url",
                                f"card {e + 1} button {k + 1}")
    elif step.offer_booking is not None and step.offer_booking.text:
        yield StepText(("offer_booking", "text"), step.offer_booking.text, "dm", "text")
    elif step.notify is not None:
        yield StepText(("notify",), step.notify, "internal", "text")
    elif step.handoff is not None and step.handoff.note:
        yield StepText(("handoff", "note"), step.handoff.note, "internal", "note")
    elif step.set_ is not None:
        for name, value in step.set_.items():
            yield StepText(("set", name), value, "internal", f"value of {name}")


PROFILE_PLACEHOLDERS = frozenset({"username", "first_name", "name"})
"""Placeholders filled from the contact's Instagram profile (username, name)."""


def uses_profile_placeholders(workflows: Sequence[Workflow]) -> bool:
    """Whether an enabled workflow's message names ``{username}``, ``{first_name}`` or
    ``{name}``: the daemon then looks a new contact's profile up before deciding their first
    message, so the first reply is personal (a DM's webhook carries no username)."""
    return any(
        not PROFILE_PLACEHOLDERS.isdisjoint(placeholders(t.template))
        for wf in workflows if wf.enabled
        for step in wf.actions
        for t in step_texts(step)
    )


def _worst_case(template: str, url_size: int | None) -> str:
    values = {n: "x" * ASSUMED_SIZES.get(n, ASSUMED_SIZES["field"])
              for n in placeholders(template)}
    rendered = render(template, values)
    if url_size is not None:  # link tracking rewrites every URL to {public_url}/l/CODE
        rendered = URL_RE.sub("x" * url_size, rendered)
    return LINK_TOKEN_RE.sub("x" * ASSUMED_SIZES["link"], rendered)


def length_problem(t: StepText, url_size: int | None) -> str | None:
    """How ``t`` goes over its limit after templating, in words; None when it fits.
    ``url_size``: the length of a tracked URL when link tracking rewrites URLs."""
    if t.kind not in ("dm", *_CHAR_LIMITS):
        return None
    text = _worst_case(t.template, url_size if t.kind != "public" else None)
    templated = text != t.template
    after = " after templating" if templated else ""
    if t.kind == "dm":
        size = len(text.encode("utf-8"))
        if size > _DM_BYTES:
            from instaset.graph import split_text  # only here: it brings aiohttp

            parts = len(split_text(text))
            return (f"{t.label} is {size} bytes{after}, over Instagram's {_DM_BYTES}-byte limit "
                    f"for one message: it goes out as {parts} messages (as the private reply "
                    f"to a comment, only the first: the rest needs the commenter's open "
                    f"window)" + (_ASSUMPTION if templated else ""))
        return None
    limit = _CHAR_LIMITS[t.kind]
    if len(text) > limit:
        return (f"{t.label} is {len(text)} characters{after}; the limit is {limit}"
                + (_ASSUMPTION if templated else ""))
    return None


_ASSUMPTION = (f" (counting {{username}} as {ASSUMED_SIZES['username']}, fields as "
               f"{ASSUMED_SIZES['field']}, {{text}} as {ASSUMED_SIZES['text']} and links as "
               f"{ASSUMED_SIZES['link']} bytes)")
